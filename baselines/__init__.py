"""Reference encoders, registered through the same public API a submitter uses."""

from baselines import (dino2d, intensity, mae3d, oracle, random_init, simclr3d, simclr_vit3d,  # noqa: F401
                       supervised, temporal)


def ssl_methods() -> dict:
    """Pretraining recipes by encoder name (``bench pretrain --encoder NAME``)."""
    return {"simclr3d": simclr3d.SimCLRMethod, "simclr_vit3d": simclr_vit3d.SimCLRViTMethod,
            "mae3d": mae3d.MAEMethod, "dino2d": dino2d.DINOMethod, "temporal": temporal.TemporalMethod}
