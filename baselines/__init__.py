"""Reference encoders, registered through the same public API a submitter uses."""

from functools import partial

from baselines import (dino2d, intensity, mae3d, oracle, random_init, simclr3d, simclr_vit3d,  # noqa: F401
                       supervised, temporal, volumes)


def ssl_methods() -> dict:
    """Pretraining recipes by encoder name (``bench pretrain --encoder NAME``)."""
    return {"simclr3d": simclr3d.SimCLRMethod, "simclr_vit3d": simclr_vit3d.SimCLRViTMethod,
            "mae3d": mae3d.MAEMethod, "dino2d": dino2d.DINOMethod, "temporal": temporal.TemporalMethod}


def _register_init_floors() -> None:
    """``<ssl encoder>@init``: each SSL encoder at its own seeded random initialisation, the floor
    its pretraining is measured against (same as ``--encoder NAME --weights init``)."""
    from baselines.recipe import INIT
    from bench.encoders import register_encoder

    for name, method in ssl_methods().items():
        register_encoder(f"{name}@{INIT}")(partial(method.encoder_cls, weights=INIT))


_register_init_floors()
