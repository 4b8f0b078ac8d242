"""Encoder protocol, card and registry.

An encoder turns a batch of volumes (B, 1, D, H, W) in its declared input space into
embeddings (B, E). Its card records what a reader of a result needs to trust it: architecture,
size, input space, SSL method, which subjects it was pretrained on (so overlap with test
subjects is flagged) and the checkpoint hash. Encoders register by decorator, through the
``mribench.encoders`` entry-point group, or from the command line as ``file.py:ClassName``;
the baselines use exactly the same path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.errors import MribenchError
from bench.splits import file_sha256  # noqa: F401  (re-exported: encoders hash their weights with it)


class EncoderCard(BaseModel):
    """Metadata of an encoder (after MTEB's ModelMeta)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    architecture: str
    n_parameters: int
    embed_dim: int
    input_space: str
    ssl_method: str
    pretraining_data: dict = Field(default_factory=lambda: {"cohort": None, "subjects": []})
    checkpoint_sha256: str | None = None
    reference: str = ""
    supports_finetune: bool = False
    supports_segmentation: bool = False
    version: str = "1"

    @field_validator("input_space")
    @classmethod
    def _known_space(cls, v: str) -> str:
        from bench.data.spaces import SPACES

        if v not in SPACES:
            raise ValueError(f"unknown input space '{v}'; known: {sorted(SPACES)}")
        return v

    def overlap(self, subjects: Iterable[str], cohort: str | None = None) -> set[str]:
        """Evaluated subjects that the encoder saw in pretraining.

        Subject ids are only comparable within one cohort (``sub-0001`` of the smoke and of the
        default synthetic cohort are different people), so when both the card and the caller
        name a cohort and the names differ, nothing overlaps.
        """
        pretrained_on = self.pretraining_data.get("cohort")
        if cohort is not None and pretrained_on is not None and pretrained_on != cohort:
            return set()
        return set(subjects) & set(self.pretraining_data.get("subjects", []))


class Encoder:
    """Base class; subclasses set ``card`` and implement ``embed`` (and optionally the rest)."""

    card: EncoderCard

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def checkpoint_hash(self) -> str:
        """Identity of the weights, the key of embedding caches."""
        if self.card.checkpoint_sha256:
            return self.card.checkpoint_sha256
        if hasattr(self, "module"):
            h = hashlib.sha256()
            for name, tensor in sorted(self.module().state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            return h.hexdigest()
        return hashlib.sha256(self.card.model_dump_json().encode()).hexdigest()


_REGISTRY: dict[str, Callable[..., Encoder]] = {}
_LOADED = False


def register_encoder(name: str):
    """Decorator registering an encoder class or factory under ``name``."""

    def wrap(obj):
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            raise MribenchError(f"encoder name '{name}' is already registered by {_REGISTRY[name]!r}; "
                                f"cannot register {obj!r}")
        _REGISTRY[name] = obj
        return obj

    return wrap


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import baselines  # noqa: F401  (registers the reference encoders)

    for ep in entry_points(group="mribench.encoders"):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = ep.load()


def list_encoders() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _from_file(spec: str, **kwargs) -> Encoder:
    path_str, _, cls_name = spec.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise MribenchError(f"{path}: encoder file not found")
    module_name = "mribench_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, cls_name):
        raise MribenchError(f"{path}: no class '{cls_name}'")
    return getattr(module, cls_name)(**kwargs)


def get_encoder(spec: str, **kwargs) -> Encoder:
    """A registered name, or ``path/to/file.py:ClassName`` (a submitter's encoder)."""
    if ".py:" in spec:
        encoder = _from_file(spec, **kwargs)
    else:
        _load_builtin()
        if spec not in _REGISTRY:
            raise MribenchError(f"unknown encoder '{spec}'; registered: {', '.join(sorted(_REGISTRY))} "
                                "(or give path/to/file.py:ClassName)")
        encoder = _REGISTRY[spec](**kwargs)
    if not isinstance(getattr(encoder, "card", None), EncoderCard):
        raise MribenchError(f"encoder '{spec}' has no EncoderCard in its 'card' attribute")
    return encoder


def read_state_dict(path: str | Path, *, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: bare, or under ``model_state_dict`` (the common training-script
    layout), with DataParallel's ``module.`` prefixes removed."""
    state = torch.load(path, map_location="cpu", weights_only=weights_only)
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise MribenchError(f"{path}: not a state dict (expected a dict of tensors, or one under 'model_state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)``, with an error that lists the keys that do not fit."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong:
            parts.append("shape mismatch: " + show([f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                                                    for k in wrong]))
        raise MribenchError(f"{source}: does not fit {module.__class__.__name__} - " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_checkpoint_encoder(checkpoint: str | Path, card: str | Path) -> Encoder:
    """An encoder from a state_dict checkpoint and its card JSON.

    The card's ``architecture`` names a registered encoder whose ``module()`` receives the
    weights; the checkpoint's SHA-256 must match the card's when the card states one.
    """
    checkpoint, card = Path(checkpoint), Path(card)
    try:
        meta = EncoderCard.model_validate(json.loads(card.read_text()))
    except Exception as e:  # pydantic or JSON errors
        raise MribenchError(f"{card}: invalid encoder card ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    digest = file_sha256(checkpoint)
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != digest:
        raise MribenchError(f"{checkpoint}: SHA-256 {digest[:12]} does not match the card's "
                            f"{meta.checkpoint_sha256[:12]}; the file was changed or is the wrong one")
    encoder = get_encoder(meta.architecture)
    load_strict(encoder.module(), read_state_dict(checkpoint), checkpoint)
    encoder.card = meta.model_copy(update={"checkpoint_sha256": digest})
    return encoder


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()
