"""Target kinds: what a task predicts (classification, regression, survival, segmentation).

A kind carries every fact the harness needs about a target: how labels are read from the
examples table, the probe head fitted on frozen embeddings, the fine-tune loss and target
encoding (and how raw outputs become predictions), and what Uno's C needs from the task.
Protocols ask the task's kind (``spec.target``) instead of branching on its name.

Whether a task reads one scan or a sequence of scans is its **input mode**
(``spec.input.mode``), not its kind: ``conversion`` is a classification over a sequence. The
task-spec spelling ``kind: sequence_classification`` predates this and is read as
classification (kept, since it is part of the committed specs' hashes).

A new kind is one module defining a :class:`TargetKind` subclass, plus one line registering it in
:data:`KINDS` (a ``"module:object"`` reference, imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bench.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

#: Task-spec kind names that mean another kind (read, never written by new specs).
ALIASES: dict[str, str] = {"sequence_classification": "classification"}


class TargetKind:
    """Base of the target kinds; subclasses override what differs."""

    name: str = ""
    #: labels are class indices (few-shot draws per class; the spec must list ``label.classes``)
    has_classes: bool = False
    #: scored by a probe head on frozen embeddings; False: the protocol reads voxels itself
    uses_embeddings: bool = True
    #: even its frozen probe trains a network (a decoder): jobs of this kind want a GPU
    trains_network: bool = False

    def labels(self, table: "pd.DataFrame") -> np.ndarray:
        """The examples' targets, as :class:`bench.tasks.Examples` stores them."""
        return table["y"].to_numpy()

    def head_targets(self, y: np.ndarray) -> np.ndarray:
        """Targets as the probe head and the metrics take them."""
        return y

    def n_outputs(self, spec) -> int:
        return 1

    def probe_head(self, spec, seed: int):
        """The flat probe head of one embedding per example (sequence tasks pool first)."""
        raise NotImplementedError(f"no probe head for target kind {self.name}")

    def metric_params(self, spec) -> dict[str, dict]:
        """Keyword arguments the task gives its metrics (none by default)."""
        return {}

    # -- fine-tuning -----------------------------------------------------------------------------
    def finetune_stats(self, y_train: np.ndarray) -> tuple[float, float]:
        """Statistics the target encoding needs from the training labels."""
        return (0.0, 1.0)

    def finetune_targets(self, y: np.ndarray, stats: tuple[float, float]) -> "torch.Tensor":
        import torch

        return torch.as_tensor(y, dtype=torch.float32)

    def finetune_loss(self, pred: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError(f"no fine-tune loss for target kind {self.name}")

    def finetune_predictions(self, raw: "torch.Tensor", stats: tuple[float, float]) -> np.ndarray:
        return raw[:, 0].numpy()

    def finetune_batch(self, n_train: int) -> int:
        """Examples per optimiser step."""
        return 4

    def __repr__(self) -> str:
        return f"<target kind {self.name}>"


class Classification(TargetKind):
    name = "classification"
    has_classes = True

    def head_targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(int)

    def n_outputs(self, spec) -> int:
        return len(spec.label.classes)

    def probe_head(self, spec, seed: int):
        from bench.heads import LogisticHead

        return LogisticHead(n_classes=len(spec.label.classes or []), seed=seed)

    def finetune_targets(self, y: np.ndarray, stats: tuple[float, float]) -> "torch.Tensor":
        import torch

        return torch.as_tensor(y.astype(int))

    def finetune_loss(self, pred: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        from torch import nn

        return nn.functional.cross_entropy(pred, target)

    def finetune_predictions(self, raw: "torch.Tensor", stats: tuple[float, float]) -> np.ndarray:
        import torch

        return torch.softmax(raw, dim=1).numpy()


class Regression(TargetKind):
    name = "regression"

    def probe_head(self, spec, seed: int):
        from bench.heads import RidgeHead

        return RidgeHead()

    def finetune_stats(self, y_train: np.ndarray) -> tuple[float, float]:
        """Targets are standardised on the training labels (and predictions mapped back)."""
        return (float(np.mean(y_train)), float(np.std(y_train) or 1.0))

    def finetune_targets(self, y: np.ndarray, stats: tuple[float, float]) -> "torch.Tensor":
        import torch

        return torch.as_tensor((y.astype(float) - stats[0]) / stats[1], dtype=torch.float32)

    def finetune_loss(self, pred: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        from torch import nn

        return nn.functional.mse_loss(pred[:, 0], target)

    def finetune_predictions(self, raw: "torch.Tensor", stats: tuple[float, float]) -> np.ndarray:
        return raw[:, 0].numpy() * stats[1] + stats[0]


class Survival(TargetKind):
    """Time to event with censoring: labels are (time, event) pairs; predictions are risks."""

    name = "survival"

    def labels(self, table: "pd.DataFrame") -> np.ndarray:
        return table[["time", "event"]].to_numpy(float)

    def probe_head(self, spec, seed: int):
        from bench.heads import CoxHead

        return CoxHead(seed=seed)

    def metric_params(self, spec) -> dict[str, dict]:
        """A survival task's ``label.horizon_months`` is Uno's C truncation time tau (only events
        before the horizon count; see :func:`bench.metrics.uno_c`)."""
        if spec.label.horizon_months is not None and "uno_c" in spec.metrics:
            return {"uno_c": {"tau": float(spec.label.horizon_months)}}
        return {}

    def finetune_loss(self, pred: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        return cox_loss(pred[:, 0], target[:, 0], target[:, 1])

    def finetune_batch(self, n_train: int) -> int:
        return max(8, n_train)  # Cox needs risk sets


class Segmentation(TargetKind):
    """Voxel labels: scored by a light decoder over the encoder's feature maps, not by a head."""

    name = "segmentation"
    uses_embeddings = False
    trains_network = True


def cox_loss(risk: "torch.Tensor", time: "torch.Tensor", event: "torch.Tensor") -> "torch.Tensor":
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events."""
    import torch

    order = torch.argsort(time, descending=True)
    risk, event = risk[order], event[order]
    log_cum = torch.logcumsumexp(risk, dim=0)
    return -((risk - log_cum) * event).sum() / event.sum().clamp_min(1.0)


def _instantiate(name: str, obj: Any) -> None:
    if not isinstance(obj, TargetKind):
        raise TypeError(f"target kind '{name}' must be a TargetKind instance, got {obj!r}")


#: The target kinds, by the name task specs use.
KINDS: Registry[TargetKind] = Registry("target kind", on_load=_instantiate)
KINDS.register("classification", "bench.kinds:CLASSIFICATION")
KINDS.register("regression", "bench.kinds:REGRESSION")
KINDS.register("survival", "bench.kinds:SURVIVAL")
KINDS.register("segmentation", "bench.kinds:SEGMENTATION")

CLASSIFICATION, REGRESSION, SURVIVAL, SEGMENTATION = Classification(), Regression(), Survival(), Segmentation()


def kind_names() -> list[str]:
    """Every name a task spec may give as its ``kind`` (the registered kinds and their aliases)."""
    return [*KINDS, *ALIASES]


def target_kind(name: str) -> TargetKind:
    """The kind a task-spec ``kind`` names (aliases resolved)."""
    return KINDS.lookup(ALIASES.get(name, name))
