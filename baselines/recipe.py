"""What the SSL baselines share: the pretraining recipe base, and the encoder side that finds,
loads and vouches for the weights a recipe produced."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Mapping
from typing import Callable, TypeVar

import torch
from torch import nn

from bench.encoders import Encoder, EncoderCard
from bench.encoders.api import INIT, file_sha256, load_strict, read_state_dict
from bench.errors import MribenchError

C = TypeVar("C")


def named_config(configs: Mapping[str, C], name: str, owner: str) -> C:
    """The configuration called ``name``; any other name is a one-line error naming the choices.
    The one lookup behind every encoder and recipe, so ``bench run --encoder`` and ``bench
    pretrain --config`` refuse an unknown config in the same words."""
    if name not in configs:
        raise MribenchError(f"no config '{name}' for {owner}; available: {', '.join(configs)}")
    return configs[name]

#: committed checkpoints, ``<encoder>-<config>.pt`` with the card ``<encoder>-<config>.json`` beside it
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["INIT", "PretrainedEncoder", "Recipe", "WEIGHTS_DIR", "pretraining_of", "resolve_weights"]
# INIT (``--weights init``): the encoder's own seeded random initialisation, the fair floor of its
# pretraining (same architecture, width and read-out; ``<encoder>@init``, see bench.encoders.api)


def resolve_weights(encoder: str, config: str, weights: str | Path | None) -> Path | None:
    """The weights to load: the given file, else the committed ``weights/<encoder>-<config>.pt``."""
    if weights == INIT:
        return None
    if weights is None:
        committed = WEIGHTS_DIR / f"{encoder}-{config}.pt"
        return committed if committed.is_file() else None
    weights = Path(weights)
    if not weights.is_file():
        raise MribenchError(f"{encoder}: weights file {weights} not found")
    return weights


def pretraining_of(weights: Path) -> dict:
    """The pretraining block of the card that ``bench pretrain`` writes beside its weights (read with
    the bounds of records: the card travels with weights from anywhere)."""
    from bench.results import read_bounded_json

    card_file = weights.with_suffix(".json")
    empty = {"cohort": None, "subjects": []}
    if not card_file.is_file():
        return empty
    card = read_bounded_json(card_file, "encoder card")
    block = card.get("pretraining_data", empty) if isinstance(card, dict) else None
    if not isinstance(block, dict):
        raise MribenchError(f"{card_file}: the card's 'pretraining_data' is not a JSON object; fix or remove the card")
    return block


class PretrainedEncoder(Encoder):
    """An SSL baseline: useless without its pretrained weights, so it refuses to embed without them.

    Subclasses call :meth:`_load_weights` in ``__init__`` (after building ``self.net``) and
    :meth:`_require_weights` before every forward pass. A subclass names its registered name
    (``registry_name``, the one in ``pyproject.toml``'s entry points) and its SSL ``recipe``; the
    recipe then knows the encoder that loads what it trains (:attr:`Recipe.encoder_cls`).
    """

    registry_name: str
    recipe: type | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "recipe" in cls.__dict__ and cls.recipe is not None:
            cls.recipe.encoder_cls = cls  # the declared link, one way: encoder -> recipe
    pretrained: bool = False
    init_floor: bool = False
    _untrained_ok: bool = False

    @property
    def card(self) -> EncoderCard:
        return self._card

    @card.setter
    def card(self, card: EncoderCard) -> None:
        """The init floor reports itself as ``<name>@init`` with no pretraining data and no
        checkpoint, so its records and cached embeddings are never taken for the pretrained
        encoder's (the harness keys both by the weights it hashes itself)."""
        if self.init_floor and not card.name.endswith("@" + INIT):
            card = card.model_copy(update={
                "name": f"{card.name}@{INIT}", "ssl_method": f"none: seeded random init ({card.ssl_method})",
                "pretraining_data": {"cohort": None, "subjects": []}, "checkpoint_sha256": None})
        self._card = card

    def _build(self, configs: dict, config: str, build: Callable[[object], nn.Module]) -> None:
        """Set ``self.config`` and ``self.net`` (seeded, eval mode) for a named configuration."""
        self.config = named_config(configs, config, self.registry_name)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = build(self.config).eval()

    def _load_weights(self, config: str, weights: str | Path | None, load: Callable[[Path], None] | None = None, *,
                      untrained_ok: bool) -> tuple[str | None, dict]:
        """Find and ``load`` the weights; return (their SHA-256, the card's pretraining block).

        ``load`` defaults to a strict load of the file's state dict into ``self.net`` (what
        ``bench pretrain`` writes); published checkpoints with their own layout pass their own.
        ``untrained_ok`` lets a card be built without weights (``bench list encoders``, recipes).
        """
        self._untrained_ok = untrained_ok
        if weights == INIT:  # the seeded initialisation _build made is the model
            self.init_floor, self._untrained_ok, self.pretrained = True, True, False
            return None, {"cohort": None, "subjects": []}
        path = resolve_weights(self.registry_name, config, weights)
        if path is None:
            self.pretrained = False
            return None, {"cohort": None, "subjects": []}
        if load is None:
            load_strict(self.net, read_state_dict(path), path)
        else:
            load(path)
        self.pretrained = True
        return file_sha256(path), pretraining_of(path)

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        """The network's forward pass (encoders whose read-out differs override this)."""
        self._require_weights()
        return self.net(volumes)

    def module(self) -> nn.Module:
        return self.net

    def _require_weights(self) -> None:
        if not self.pretrained and not self._untrained_ok:
            raise MribenchError(f"{self.registry_name} ({self.config.name}) has no pretrained weights here: run "
                                f"`bench pretrain --encoder {self.registry_name}` or pass --weights FILE")


class Recipe:
    """Base of the SSL recipes in ``baselines/`` (see :class:`bench.pretrain.SSLMethod`).

    Subclasses set ``net``, ``input_space`` and ``config_name``, and implement ``loss``; the
    encoder that loads the weights (``encoder_cls``) names the recipe (``recipe = ...``), and the
    recipe's name is that encoder's registered name.
    """

    sequences: tuple[str, ...] = ("T1w",)
    net: nn.Module
    encoder_cls: type
    config_name: str

    @property
    def name(self) -> str:
        return self.encoder_cls.registry_name

    def network(self) -> nn.Module:
        return self.net

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def card(self, pool: list[str], cohort: str, steps: int) -> dict:
        """The encoder's card with the pool it was pretrained on (ids, so overlaps can be flagged)."""
        card = self.encoder_cls(config=self.config_name, untrained_ok=True).card
        return card.model_copy(update={"pretraining_data": {"cohort": cohort, "subjects": pool, "steps": steps}}
                               ).model_dump(mode="json")
