"""A variance-covariance regulariser against dimensional collapse (after VICReg).

Round 1 of the v2 pretraining (docs/pretraining-v2) measured why no SSL encoder beat its own
init under the linear probe: pretraining with batches of 8 folds the pooled embeddings onto one
to five directions (90 % of their variance), against 11 to 37 at initialisation, the dimensional
collapse of contrastive learning with small batches (Jing et al., ICLR 2022). A linear probe
cannot read what was folded away. VICReg (Bardes, Ponce and LeCun, ICLR 2022) prevents it
directly: a hinge keeps every dimension's standard deviation over the batch at ``gamma`` or above,
and a penalty on the off-diagonal covariances spreads the variance over the dimensions. Here it is
applied to the backbone's pooled embedding, the very vector the probes read, on top of the
recipe's own loss.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

C = TypeVar("C")

#: VICReg's weights, variance 25 : covariance 1 (with invariance 25); kept as their ratio here,
#: since the recipe's own loss stands in for the invariance term.
COVARIANCE_WEIGHT = 1.0 / 25.0


def variance_term(h: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Mean over dimensions of ``relu(gamma - std)``, the std over the batch (rows of ``h``)."""
    std = torch.sqrt(h.var(dim=0) + eps)
    return torch.relu(gamma - std).mean()


def covariance_term(h: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal covariances over the batch, divided by the dimension."""
    n, d = h.shape
    centred = h - h.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off = cov - torch.diag(torch.diag(cov))
    return off.pow(2).sum() / d


def variance_covariance(h: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """The regulariser: variance hinge + COVARIANCE_WEIGHT x covariance penalty on ``h`` (n, d)."""
    if h.shape[0] < 2:
        raise ValueError("the variance-covariance regulariser needs at least 2 embeddings in a batch")
    return variance_term(h, gamma) + COVARIANCE_WEIGHT * covariance_term(h)


def weighted_variance_covariance(weight: float, h: torch.Tensor) -> torch.Tensor | float:
    """``weight`` x the regulariser on ``h``, the term a recipe adds to its loss; 0, with nothing
    computed, when its config leaves it off (``weight`` 0)."""
    return weight * variance_covariance(h) if weight else 0.0


def described(weight: float, embeddings: str) -> str:
    """What a recipe's card adds to its SSL method when the term is on (empty when off)."""
    return f", VICReg variance-covariance term x {weight:g} on {embeddings}" if weight else ""


def with_variance_covariance(config: C, weight: float = 1.0) -> C:
    """``config`` plus the term (a dataclass config with ``name`` and ``var_cov`` fields): every
    recipe's ``small-vc`` is its ``small`` with exactly this change and nothing else."""
    return dataclasses.replace(config, name=f"{config.name}-vc", var_cov=weight)
