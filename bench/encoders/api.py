"""Encoder protocol, capabilities, card and registry.

An encoder turns a batch of volumes (B, 1, D, H, W) in its declared input space into
embeddings (B, E). What else it can do is a **capability**, a runtime-checkable protocol it
satisfies by having the method (after MTEB's ``models_protocols``): :class:`FeatureMaps`
(multi-scale maps for segmentation), :class:`Trainable` (a torch module, for fine-tuning and the
weights hash), :class:`Sequence` (its own summaries of a scan history), :class:`Latent` (reads
cohort rows, not voxels) and :class:`LabelMaps` (the oracle's truth as maps). The harness asks
:func:`capabilities`, never ``hasattr``.

Its card records what a reader of a result needs to trust it: architecture, size, input space,
SSL method, which subjects it was pretrained on (so overlap with test subjects is flagged) and
the checkpoint hash. The card's ``supports_finetune`` / ``supports_segmentation`` flags are
derived from the capabilities unless the card states them (an encoder whose module is not its
volumes-to-embeddings network declines fine-tuning that way).

Encoders live in one :class:`~bench.registry.Registry` (:data:`ENCODERS`): by decorator, through
the ``mribench.encoders`` entry-point group (the baselines are declared there, in
``pyproject.toml``; the core never imports them), or from the command line as
``file.py:ClassName``. ``NAME@init`` is any encoder with an SSL recipe at its own seeded random
initialisation (``--weights init``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import marshal
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from bench.errors import MribenchError
from bench.registry import Registry
from bench.splits import file_sha256  # also re-exported: encoders hash their weights with it

#: ``--weights init`` / ``NAME@init``: an SSL encoder at its own seeded random initialisation
INIT = "init"


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
    #: None: derived from the encoder's capabilities (:func:`derive_card_flags`); written as a bool
    supports_finetune: bool | None = None
    supports_segmentation: bool | None = None
    version: str = "1"

    @field_serializer("supports_finetune", "supports_segmentation")
    def _flag(self, v: bool | None) -> bool:
        return bool(v)

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


# -- capabilities --------------------------------------------------------------------------------
@runtime_checkable
class FeatureMaps(Protocol):
    """Multi-scale feature maps of a batch of volumes (segmentation decoders read them)."""

    def feature_maps(self, volumes: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class Trainable(Protocol):
    """A torch module holding the weights (hashed as the encoder's identity); fine-tuning trains a
    copy of it when the card supports fine-tuning (then it maps volumes to embeddings)."""

    def module(self) -> torch.nn.Module: ...


@runtime_checkable
class Sequence(Protocol):
    """The encoder's own summaries of a subject's scan history: (L, F) embeddings with their months
    -> (L, F') features, pooled by the harness like any other (the temporal baseline)."""

    def sequence_features(self, embeddings: np.ndarray, months: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Latent(Protocol):
    """Reads cohort rows (latents, a features table), never voxels: embeddings by scan key."""

    def embed_rows(self, rows, cohort) -> np.ndarray: ...


@runtime_checkable
class LabelMaps(Protocol):
    """The truth itself as maps at every scale (the oracle's segmentation)."""

    def label_maps(self, labels: torch.Tensor, n_classes: int) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class Capabilities:
    """What the harness may do with an encoder: the one place that answers it."""

    latent: bool          # reads cohort rows: robustness does not apply, no scan gate before embedding
    feature_maps: bool
    label_maps: bool
    trainable: bool
    sequence: bool
    finetune_only: bool   # trained from scratch on each task: fine-tuning is its only protocol
    finetunes: bool       # Trainable and the card supports fine-tuning
    segments: bool        # label maps, or feature maps the card offers for segmentation


def capabilities(encoder) -> Capabilities:
    card = encoder.card
    trainable = isinstance(encoder, Trainable)
    label_maps = isinstance(encoder, LabelMaps)
    return Capabilities(latent=isinstance(encoder, Latent), feature_maps=isinstance(encoder, FeatureMaps),
                        label_maps=label_maps, trainable=trainable, sequence=isinstance(encoder, Sequence),
                        finetune_only=bool(getattr(encoder, "finetune_only", False)),
                        finetunes=trainable and bool(card.supports_finetune),
                        segments=label_maps or bool(card.supports_segmentation))


def derive_card_flags(encoder) -> None:
    """Fill the card flags it leaves unstated from the encoder's capabilities."""
    card = encoder.card
    update = {}
    if card.supports_finetune is None:
        update["supports_finetune"] = isinstance(encoder, Trainable)
    if card.supports_segmentation is None:
        update["supports_segmentation"] = isinstance(encoder, (FeatureMaps, LabelMaps))
    if update:
        encoder.card = card.model_copy(update=update)


class Encoder:
    """Base class; subclasses set ``card`` and implement ``embed`` (and optionally the capabilities)."""

    card: EncoderCard
    #: trained from scratch on each task (the ``supervised`` baseline): frozen protocols are refused
    finetune_only: bool = False

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def checkpoint_hash(self) -> str:
        """The checkpoint hash the encoder reports: its card's ``checkpoint_sha256`` (the SHA-256 of
        the weight file) when it states one, else :func:`weights_sha256`. Recorded as provenance
        only: a card is text anybody can write, so the harness keys caches (:func:`code_sha256`,
        :func:`bench.embeddings.encoder_key`) and identifies records by :func:`weights_sha256`,
        which it computes itself, whatever this method returns."""
        return self.card.checkpoint_sha256 or weights_sha256(self)


# -- what an encoder really is: weights, code, configuration ---------------------------------------
#: attribute under which an encoder object keeps the hash of its weights (computed once per object)
_WEIGHTS_MEMO = "_mribench_weights_sha256"
#: SHA-256 of source files, by (path, size, mtime_ns): a run hashes each file once
_FILE_MEMO: dict[tuple[str, int, int], str] = {}


def _module_of(encoder) -> torch.nn.Module | None:
    """The encoder's torch module when it exposes one (``module()``), else None."""
    get = getattr(encoder, "module", None)
    module = get() if callable(get) else None
    return module if isinstance(module, torch.nn.Module) else None


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 has no numpy twin, so view it as bytes)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict: every entry's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(_tensor_bytes(value))
        else:  # extra state of a custom module
            h.update(repr(value).encode())
    return h.hexdigest()


def weights_sha256(encoder) -> str:
    """SHA-256 of the weights the encoder object really holds: its module's state dict (hashed once
    per object, at its first use; the harness fine-tunes copies, never the object itself). For an
    encoder without a torch module (handcrafted features, the oracle) it is the hash of its card,
    since nothing else there can be checked. Never the ``checkpoint_sha256`` a card declares alone.
    """
    memo = getattr(encoder, "__dict__", {}).get(_WEIGHTS_MEMO)
    if memo is not None:
        return memo
    module = _module_of(encoder)
    if module is not None:
        digest = state_dict_sha256(module)
    else:
        digest = hashlib.sha256(b"card:" + encoder.card.model_dump_json().encode()).hexdigest()
    try:
        setattr(encoder, _WEIGHTS_MEMO, digest)
    except (AttributeError, TypeError):  # __slots__ or a frozen object: hashed again next time
        pass
    return digest


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_MEMO:
        _FILE_MEMO[key] = file_sha256(path)
    return _FILE_MEMO[key]


def _class_code(cls: type) -> str:
    """A fingerprint of the code that defines ``cls``: its module's source file (so helper
    functions beside the class count too), or, for a class whose file cannot be found (defined
    in a notebook or by ``exec``), the bytecode of its own functions."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path and os.path.isfile(path):
        return f"{cls.__module__}.{cls.__qualname__}:{_file_sha256(os.path.abspath(path))}"
    h = hashlib.sha256()
    for name, value in sorted(vars(cls).items()):
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None:
            h.update(name.encode() + marshal.dumps(code))
    return f"{cls.__module__}.{cls.__qualname__}:code:{h.hexdigest()}"


def code_sha256(encoder) -> str:
    """SHA-256 of the code that computes the encoder's embeddings: the source files defining its
    class and base classes, and every class of its torch module tree (ours, MONAI's, torch's), so
    an edited ``embed()`` or network is a different encoder. Code the encoder calls in other files
    (helpers imported from elsewhere) is not covered."""
    classes = set(type(encoder).__mro__)
    module = _module_of(encoder)
    if module is not None:
        classes |= {c for m in module.modules() for c in type(m).__mro__}
    parts = sorted(_class_code(c) for c in classes if c.__module__ != "builtins")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def config_fingerprint(encoder) -> str:
    """The encoder's configuration as text: its card (JSON) and its ``config`` attribute when that is
    a dataclass or plain data (the baselines keep their named configuration there)."""
    config = getattr(encoder, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        shown = repr(config)
    elif isinstance(config, (dict, list, tuple, str, int, float, bool)) or config is None:
        shown = json.dumps(config, sort_keys=True, default=str)
    else:  # an object whose repr may hold a memory address: not a stable key
        shown = type(config).__qualname__
    return encoder.card.model_dump_json() + "\n" + shown


def _named(name: str, obj) -> None:
    """An entry whose class names itself (``registry_name``) must be registered under that name."""
    own = getattr(obj, "registry_name", None)
    if isinstance(own, str) and own != name:
        raise MribenchError(f"encoder entry '{name}' loads {obj!r}, which calls itself '{own}'")


#: Encoders by name: the ``mribench.encoders`` entry points (the baselines among them) and
#: whatever registers with :func:`register_encoder`.
ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder", group="mribench.encoders", on_load=_named)
#: names registered by the baselines and the entry points: a file encoder's card may not take them
_BUILTIN: frozenset[str] | None = None


def register_encoder(name: str):
    """Decorator registering an encoder class or factory under ``name``."""
    return ENCODERS.register(name)


def _builtin() -> frozenset[str]:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = frozenset(ENCODERS) | frozenset(f"{n}@{INIT}" for n in ssl_encoders())
    return _BUILTIN


def ssl_encoders() -> dict[str, type]:
    """Registered encoders with an SSL pretraining recipe (their class's ``recipe``), by name."""
    return {name: ENCODERS[name] for name in ENCODERS if getattr(ENCODERS[name], "recipe", None) is not None}


def list_encoders() -> list[str]:
    _builtin()
    return sorted([*ENCODERS, *(f"{n}@{INIT}" for n in ssl_encoders())])


def _factory(spec: str) -> Callable[..., Encoder]:
    """The registered factory of ``spec`` (``NAME@init``: NAME's, with ``weights='init'``)."""
    if spec in ENCODERS:
        return ENCODERS[spec]
    base, at, floor = spec.rpartition("@")
    if at and floor == INIT and base in ssl_encoders():
        cls = ENCODERS[base]
        return lambda **kwargs: cls(weights=INIT, **kwargs)
    raise MribenchError(f"unknown encoder '{spec}'; registered: {', '.join(list_encoders())} "
                        "(or give path/to/file.py:ClassName)")


def _from_file(spec: str, **kwargs) -> Encoder:
    path_str, _, cls_name = spec.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise MribenchError(f"{path}: encoder file not found")
    module_name = "mribench_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    # registered like any import, so the code fingerprint (code_sha256) finds the file it came from
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    if not hasattr(module, cls_name):
        raise MribenchError(f"{path}: no class '{cls_name}'")
    encoder = getattr(module, cls_name)(**kwargs)
    _refuse_reserved_name(encoder, path)
    return encoder


def reserved_names() -> set[str]:
    """Names of the built-in and installed encoders, as record folders spell them (lower case)."""
    from bench.results import safe_name

    return {safe_name(n).lower() for n in _builtin()}


def _refuse_reserved_name(encoder, path: Path) -> None:
    """A file encoder may not call itself after a registered encoder: its records would sit in, and
    be taken for, that encoder's (``random``, ``simclr3d``...)."""
    from bench.results import safe_name

    from bench.names import name_problem

    card = getattr(encoder, "card", None)
    name = getattr(card, "name", None)
    problem = name_problem("encoder", name) if name is not None else None
    if problem:  # it names the encoder's records, whose schema refuses anything else
        raise MribenchError(f"{path}: the card's {problem}")
    if isinstance(name, str) and safe_name(name).lower() in reserved_names():
        raise MribenchError(f"{path}: the card name '{name}' is reserved for the registered encoder of that "
                            "name; give your encoder's card another name")


def get_encoder(spec: str, **kwargs) -> Encoder:
    """A registered name, or ``path/to/file.py:ClassName`` (a submitter's encoder)."""
    if ".py:" in spec:
        encoder = _from_file(spec, **kwargs)
    else:
        encoder = _factory(spec)(**kwargs)
    if not isinstance(getattr(encoder, "card", None), EncoderCard):
        raise MribenchError(f"encoder '{spec}' has no EncoderCard in its 'card' attribute")
    derive_card_flags(encoder)
    return encoder


def load_torch_file(path: str | Path, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never code.

    Unpickling anything else can run arbitrary code (a ``__reduce__`` is a function call), so a
    file that needs other Python objects (a Lightning checkpoint with hyper-parameter objects, a
    whole pickled model) is refused with a one-line error that says how to get a loadable file;
    an unreadable file is a one-line error too, never a traceback.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MribenchError(f"{path}: {what} not found") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise MribenchError(
                f"{path}: refused: the {what} holds a Python object ({found.group(1)}), not only tensors and plain "
                "containers, and loading it could run code; if you trust the file, re-save only its tensors "
                "(e.g. torch.save(model.state_dict(), 'weights.pt')) and pass that") from None
        raise MribenchError(f"{path}: refused: not a {what} of tensors and plain containers "
                            f"({_first_reason(e)}); re-save it with torch.save(state_dict, ...)") from None
    except Exception as e:  # truncated zip, random bytes, a text file...
        raise MribenchError(f"{path}: not a readable torch {what} ({type(e).__name__}: {_first_reason(e)})") from None


def _first_reason(e: BaseException) -> str:
    """The informative line of a (possibly long, multi-line) torch error message."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    line = found.group(1) if found else next((ln for ln in text.splitlines() if ln.strip()), "")
    return " ".join(line.split())[:200] or "empty file"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: bare, or under ``model_state_dict`` (the common training-script
    layout), with DataParallel's ``module.`` prefixes removed. Loaded with ``weights_only=True``."""
    state = load_torch_file(path)
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
    from bench.results import read_bounded_json

    try:
        meta = EncoderCard.model_validate(read_bounded_json(card, "encoder card"))
    except MribenchError:
        raise
    except Exception as e:  # pydantic errors
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
