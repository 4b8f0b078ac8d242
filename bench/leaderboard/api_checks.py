"""The encoder API checks a submission passes before any compute is spent on it.

``bench submit`` runs hours of evaluation on the default profile; an encoder that returns the
wrong shape, NaN, or different numbers on every call would waste all of it, or worse, produce
records that look fine. These checks take seconds on two probe volumes and run in order of
cost; the first failure raises :class:`ApiCheckFailed` with one line that says what is wrong
and what to change.

1. **card**: a complete :class:`~bench.encoders.api.EncoderCard`: a file-system-safe name that
   no registered encoder already uses, architecture, SSL method and reference filled in,
   ``embed_dim`` >= 1, ``n_parameters`` >= 0, ``pretraining_data`` naming its ``cohort`` and
   listing its ``subjects`` (so overlap with test subjects can be flagged), and, with weights,
   ``checkpoint_sha256`` equal to the weight file's SHA-256.
2. **input space**: the declared space is one the volume store can produce, and the encoder
   reads voxels (not the synthetic cohort's latents, as the oracle does).
3. **output**: ``embed`` on a (2, 1, D, H, W) float32 batch in the declared space returns a
   ``torch.Tensor`` of shape (2, embed_dim) and dtype float32,
4. **finite**: with no NaN or infinity,
5. **deterministic**: a second call on the same batch gives the same embeddings (dropout or
   random ops left on in eval mode fail here), and
6. **batch independent**: a scan's embedding does not depend on the other scans in its batch
   (batch-norm in training mode fails here), within float tolerance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import MribenchError

#: Tolerances of the repeat / batch checks: loose enough for reordered float sums (BLAS, cuDNN),
#: far tighter than any dropout or batch-statistics effect.
REPEAT_ATOL, REPEAT_RTOL = 1e-5, 1e-5
BATCH_ATOL, BATCH_RTOL = 1e-4, 1e-4

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ApiCheckFailed(MribenchError):
    """An encoder failed an API check; the message is the one-line reason."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    detail: str


def probe_batch(shape: tuple[int, int, int], n: int = 2, seed: int = 0):
    """``n`` seeded volumes shaped like a normalised scan: z-scored noise inside an ellipsoidal
    'brain', zeros outside (what ``zscore_nonzero`` spaces deliver)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = (sum(g ** 2 for g in grids) < 0.8).float()
    noise = torch.randn((n, 1, *shape), generator=gen)
    return (noise * inside).to(torch.float32)


def _fail(check: str, message: str) -> None:
    raise ApiCheckFailed(f"API check '{check}' failed: {message}")


def check_card(encoder, weights: str | Path | None = None) -> CheckResult:
    from bench.encoders.api import EncoderCard, list_encoders
    from bench.splits import file_sha256

    card = getattr(encoder, "card", None)
    if not isinstance(card, EncoderCard):
        _fail("card", "the encoder has no EncoderCard in its 'card' attribute")
    if not _NAME.fullmatch(card.name or ""):
        _fail("card", f"name {card.name!r} must be letters, digits, '.', '_' or '-' (it names the results folder)")
    if card.name in list_encoders():
        _fail("card", f"name '{card.name}' is taken by a registered encoder; choose another name")
    for field in ("architecture", "ssl_method", "reference"):
        if not str(getattr(card, field) or "").strip():
            _fail("card", f"'{field}' is empty; say what the encoder is (reference: a paper, repository or DOI)")
    if card.embed_dim < 1:
        _fail("card", f"embed_dim is {card.embed_dim}; it must be the embedding width (>= 1)")
    if card.n_parameters < 0:
        _fail("card", f"n_parameters is {card.n_parameters}; it must be >= 0")
    data = card.pretraining_data
    if not isinstance(data, dict) or "cohort" not in data or not isinstance(data.get("subjects"), list):
        _fail("card", "pretraining_data must name its 'cohort' (null if none) and list its 'subjects' "
                      "(subject ids, empty if none) so overlap with test subjects can be flagged")
    if weights is not None:
        digest = file_sha256(weights)
        if card.checkpoint_sha256 != digest:
            _fail("card", f"checkpoint_sha256 is {str(card.checkpoint_sha256)[:12]} but {Path(weights).name} has "
                          f"{digest[:12]}; set it from the weights the encoder loads")
    return CheckResult("card", f"{card.name}: {card.architecture}, {card.embed_dim}-d, {card.ssl_method}")


def check_input_space(encoder) -> CheckResult:
    from bench.data.spaces import SPACES

    space = encoder.card.input_space
    if space not in SPACES:
        _fail("input space", f"'{space}' is not a known input space ({', '.join(sorted(SPACES))})")
    from bench.encoders.api import capabilities

    if capabilities(encoder).latent:
        _fail("input space", "the encoder reads cohort latents (embed_rows), not voxels; a submission must "
                             "embed the volumes it is given")
    shape = SPACES[space].shape
    return CheckResult("input space", f"{space}: {'x'.join(map(str, shape))} at {SPACES[space].spacing_mm} mm")


def _embed(encoder, batch, check: str):
    import torch

    try:
        with torch.no_grad():
            out = encoder.embed(batch)
    except Exception as e:  # any failure of user code is a failed check, reported in one line
        msg = " ".join(str(e).split())[:200]
        _fail(check, f"embed raised {e.__class__.__name__} on a {tuple(batch.shape)} batch of its declared "
                     f"input space: {msg}")
    return out


def check_output(encoder, batch) -> tuple[CheckResult, object]:
    import torch

    out = _embed(encoder, batch, "output")
    if not isinstance(out, torch.Tensor):
        _fail("output", f"embed returned {type(out).__name__}; it must return a torch.Tensor")
    expected = (batch.shape[0], encoder.card.embed_dim)
    if tuple(out.shape) != expected:
        _fail("output", f"embed returned shape {tuple(out.shape)} for a batch of {batch.shape[0]}; expected "
                        f"{expected} (batch, card embed_dim)")
    if out.dtype != torch.float32:
        _fail("output", f"embed returned dtype {out.dtype}; expected torch.float32")
    return CheckResult("output", f"shape {tuple(out.shape)}, {out.dtype}"), out


def check_finite(out) -> CheckResult:
    import torch

    bad = int((~torch.isfinite(out)).sum())
    if bad:
        _fail("finite", f"embed returned {bad} NaN/inf value(s) out of {out.numel()} on a normal input")
    return CheckResult("finite", "no NaN or inf")


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(a.detach().cpu().double().numpy() - b.detach().cpu().double().numpy())))


def check_deterministic(encoder, batch, first) -> CheckResult:
    import torch

    again = _embed(encoder, batch, "deterministic")
    if tuple(again.shape) != tuple(first.shape) or not torch.allclose(again, first, rtol=REPEAT_RTOL, atol=REPEAT_ATOL):
        diff = _max_diff(again, first) if tuple(again.shape) == tuple(first.shape) else float("nan")
        _fail("deterministic", f"two calls on the same batch differ (max |diff| {diff:.3g}); put the network in "
                               "eval mode (.eval(): dropout off) and remove random operations from embed")
    return CheckResult("deterministic", "repeat call identical")


def check_batch_independent(encoder, batch, first) -> CheckResult:
    import torch

    single = _embed(encoder, batch[:1], "batch independent")
    if tuple(single.shape) != (1, first.shape[1]) or not torch.allclose(single, first[:1], rtol=BATCH_RTOL,
                                                                          atol=BATCH_ATOL):
        diff = _max_diff(single, first[:1]) if tuple(single.shape) == (1, first.shape[1]) else float("nan")
        _fail("batch independent", f"a scan embedded alone differs from the same scan in a batch (max |diff| "
                                   f"{diff:.3g}); batch-norm in training mode does this: call .eval()")
    return CheckResult("batch independent", "same embedding alone and in a batch")


def run_api_checks(encoder, weights: str | Path | None = None, seed: int = 0) -> list[CheckResult]:
    """All checks in order; raises :class:`ApiCheckFailed` at the first failure."""
    from bench.data.spaces import SPACES

    results = [check_card(encoder, weights), check_input_space(encoder)]
    batch = probe_batch(SPACES[encoder.card.input_space].shape, n=2, seed=seed)
    output, first = check_output(encoder, batch)
    results += [output, check_finite(first), check_deterministic(encoder, batch, first),
                check_batch_independent(encoder, batch, first)]
    return results
