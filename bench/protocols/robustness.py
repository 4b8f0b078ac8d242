"""``robustness``: heads trained on clean scans, scored on perturbed test scans.

For each seed the probe head is fitted once on the clean training embeddings (as in
``linear_probe``). The evaluation scans (one example per subject of test and external) are then perturbed with every
artefact of :mod:`bench.perturbations` at the profile's severities (``robustness_severities``:
1-5, or 1, 3 and 5 at the default profile; on the profile's ``robustness_splits``), embedded (cached on disk under a key
that names the perturbation, severity and perturbation seed), and scored with the same heads.

The record gets a ``robustness`` block: the score per perturbation x severity (mean over
seeds), the score relative to clean, the mean relative drop per perturbation, one robustness
score per task (mean over perturbations and severities of score / clean, inverted for metrics
where lower is better so that 1 always means "as good as clean"), the documented levels and
severities, the perturbation seed, the evaluated scans and the SHA-256 of their drawn parameters.
Settings are ``clean`` and ``<perturbation>@<severity>``, the latter with
``{"perturbation": name, "severity": s}`` in their scores' params.

The parameters themselves are not in the record: they are a pure function of (perturbation seed,
scan, perturbation, severity) (:func:`bench.perturbations.draw_parameters`), the same for every
encoder, and would be most of a record's bytes (a few MB at the default profile). The record keeps
what recomputes and pins them: ``perturbation_seed``, ``levels`` (the perturbations), ``severities``,
``scans`` (``[subject, session, sequence]`` of every evaluated scan) and ``parameters_sha256``
(:func:`~bench.perturbations.parameters_digest` of :func:`~bench.perturbations.draw_all`);
``bench verify`` recomputes the digest, and :func:`~bench.perturbations.block_parameters`
(``bench robustness params RECORD``) gives the parameters back. Records written before this kept a
``parameters`` block instead, which those functions read as well (``bench results compact`` slims
such a block once its parameters are checked against the recomputation).

Where the perturbations run: on the CPU, in the reader, scan by scan (the path every committed
record was computed with). When the job's device is not the CPU, the perturbations that have a torch
implementation (:data:`bench.perturbations_torch.DEVICE_PATHS`) run instead on the whole batch on the
encoder's device, after its transfer and before the forward, with the same drawn parameters; their
embeddings are cached under another key (:func:`device_cache_tag`) and the block says which ran where
(``perturbation_paths``, only when one ran on the device). ``MRIBENCH_DEVICE_PERTURBATIONS`` overrides
the choice: ``never`` keeps every perturbation on the CPU path (the CPU records' noise), ``always``
takes the device path on a CPU as well (checks of its arithmetic).

Applies to encoders that read voxels (not the :class:`~bench.encoders.api.Latent` ones: perturbing a
scan cannot change latents read from a table) on tasks scored by probe heads.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from bench.errors import MribenchError
from bench.perturbations import PERTURBATIONS, SEVERITIES, draw_all, draw_parameters, parameters_digest, perturb_scan
from bench.progress import progress_bar
from bench.protocols import Protocol
from bench.protocols.context import (EVAL_SPLITS, Context, Setting, assemble_features, compute_of, eval_indices,
                                     fit_head, head_data, input_spacing, probe_heads_only, record_predictions, seeds,
                                     setting_score, split_indices, with_sequence_summaries)
from bench.timing import phase

#: Seed of the perturbation draws. Fixed (not the head seed) so that every head seed and every
#: encoder sees the same perturbed scans and the embeddings are computed once.
PERTURBATION_SEED = 0


#: Environment variable choosing where perturbations run: ``auto`` (default), ``always``, ``never``.
DEVICE_PERTURBATIONS_ENV = "MRIBENCH_DEVICE_PERTURBATIONS"
DEVICE_MODES = ("auto", "always", "never")


def cache_tag(name: str, severity: int, seed: int = PERTURBATION_SEED) -> str:
    """Embedding-cache key component of a perturbed scan (never equal to 'clean')."""
    return f"{name}-s{severity}-seed{seed}"


def device_cache_tag(name: str, severity: int, seed: int = PERTURBATION_SEED) -> str:
    """The same for a scan perturbed on the device: another key, since its noise (and float error)
    is not the CPU path's, while the CPU path's keys stay those of every entry written before."""
    return f"{cache_tag(name, severity, seed)}-device"


def perturbation_path(ctx: Context, name: str) -> str:
    """``device`` or ``cpu``: where perturbation ``name`` runs in this job. The device path needs a
    torch implementation and a job device other than the CPU, unless
    ``MRIBENCH_DEVICE_PERTURBATIONS`` says ``always`` (also on a CPU) or ``never``."""
    from bench.perturbations_torch import on_device

    mode = os.environ.get(DEVICE_PERTURBATIONS_ENV, "auto").strip().lower() or "auto"
    if mode not in DEVICE_MODES:
        raise MribenchError(f"{DEVICE_PERTURBATIONS_ENV}={mode}: use one of {', '.join(DEVICE_MODES)}")
    if mode == "never" or not on_device(name):
        return "cpu"
    return "device" if mode == "always" or compute_of(ctx).device != "cpu" else "cpu"


CLEAN = Setting("clean")


def perturbed(name: str, severity: int) -> Setting:
    return Setting(f"{name}@{severity}", {"perturbation": name, "severity": severity})


def setting_params(label: str) -> dict:
    """``gibbs@3`` -> ``{"perturbation": "gibbs", "severity": 3}``; ``clean`` -> ``{}``."""
    name, sep, severity = label.rpartition("@")
    return {"perturbation": name, "severity": int(severity)} if sep and severity.isdigit() else {}


def supports(spec, encoder) -> str | None:
    from bench.encoders.api import capabilities

    reason = probe_heads_only("robustness", "segmentation tasks are not supported yet")(spec, encoder)
    if reason is None and capabilities(encoder).latent:
        reason = (f"encoder {encoder.card.name} reads latents, not voxels: perturbing scans "
                  "cannot change its embeddings, so robustness does not apply")
    return reason


def run(ctx: Context) -> list:
    spec = ctx.spec
    if ctx.features is None or ctx.embeddings is None:
        raise MribenchError("robustness needs the clean embeddings and the embedding cache")
    train = split_indices(ctx, "train")
    if not len(train):
        raise MribenchError(f"{spec.name}: no training examples")
    heads = {seed: fit_head(ctx, train, seed) for seed in seeds(ctx)}

    severities, splits = grid_of(ctx.profile)
    eval_idx = {split: sub for split, idx in eval_indices(ctx).items()
                if split in splits and len(sub := one_per_subject(ctx, idx))}
    if not eval_idx:
        raise MribenchError(f"{spec.name}: no examples in the robustness splits ({', '.join(splits)})")
    scores = _score_all(ctx, heads, eval_idx, CLEAN, keep=True)
    eval_rows = np.unique(np.concatenate([ctx.examples.rows[i].ravel() for idx in eval_idx.values() for i in idx]))
    grid = [(p, s) for p in PERTURBATIONS for s in severities]
    paths = {name: perturbation_path(ctx, name) for name in PERTURBATIONS}
    with progress_bar(ctx.progress) as bar:
        task = bar.add_task(f"robustness: {len(eval_rows)} scans x {len(grid)} perturbations", total=len(grid))
        for name, severity in grid:
            features = _perturbed_features(ctx, eval_idx, eval_rows, name, severity, paths[name])
            scores += _score_all(dataclasses.replace(ctx, features=features), heads, eval_idx,
                                 perturbed(name, severity), keep=False)
            bar.advance(task)
    table = ctx.cohort.table
    scans = [[str(table.at[r, c]) for c in ("participant_id", "session_id", "sequence")] for r in eval_rows]
    ctx.extra["robustness"] = summarise_robustness(scores, spec.main_score, spec.higher_is_better, scans,
                                                   severities)
    if "device" in paths.values():  # a CPU-path block stays exactly what it was
        ctx.extra["robustness"]["perturbation_paths"] = paths
    return scores


def grid_of(profile) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(severities, evaluation splits) a profile runs robustness on, checked against the protocol's."""
    severities = tuple(int(s) for s in profile.robustness_severities)
    splits = tuple(profile.robustness_splits)
    if not severities or set(severities) - set(SEVERITIES):
        raise MribenchError(f"profile {profile.name}: robustness severities {list(severities)} must be among "
                            f"{list(SEVERITIES)}")
    if not splits or set(splits) - set(EVAL_SPLITS):
        raise MribenchError(f"profile {profile.name}: robustness splits {list(splits)} must be among "
                            f"{list(EVAL_SPLITS)}")
    return severities, splits


def grid_settings(profile) -> dict[str, list]:
    """The profile's robustness grid as a robustness record's profile settings name it: only where it
    is not the full grid. Records written before the grid was a profile knob all ran the full grid
    (every severity on test and external) and carry no such key, so their identity stays what it was."""
    severities, splits = grid_of(profile)
    out: dict[str, list] = {}
    if severities != tuple(SEVERITIES):
        out["robustness_severities"] = list(severities)
    if splits != tuple(EVAL_SPLITS):
        out["robustness_splits"] = list(splits)
    return out


def recorded_severities(profile_settings: dict | None) -> list[int]:
    """The severities a record's profile settings say its profile runs (:func:`grid_settings`)."""
    return list((profile_settings or {}).get("robustness_severities", SEVERITIES))


def _perturbed_features(ctx: Context, eval_idx: dict[str, np.ndarray], eval_rows: np.ndarray, name: str,
                        severity: int, path: str = "cpu") -> list[np.ndarray]:
    """The context's features with the evaluated examples' replaced by their perturbed scans',
    perturbed on the CPU in the reader (``path="cpu"``) or on the encoder's device (``"device"``)."""
    spacing = input_spacing(ctx)
    if path == "device":
        how = {"perturbation": device_cache_tag(name, severity),
               "batch_transform": device_transform(name, severity, spacing)}
    else:
        how = {"perturbation": cache_tag(name, severity), "transform": scan_transform(name, severity, spacing)}
    emb = ctx.embeddings.embed(ctx.encoder, ctx.cohort, eval_rows, ctx.store, progress=False, compute=ctx.compute,
                               **how)
    features = list(ctx.features)
    for idx in eval_idx.values():
        sub = ctx.examples.subset(np.isin(np.arange(len(ctx.examples)), idx))
        for i, f in zip(idx, with_sequence_summaries(sub, assemble_features(sub, emb), ctx.encoder)):
            features[i] = f
    return features


def scan_transform(name: str, severity: int, spacing: float):
    """The CPU path: ``transform(volume, row)``, one scan at a time in the reader."""
    def transform(volume, row):
        out, _ = perturb_scan(volume, name, severity, seed=PERTURBATION_SEED, subject=row["participant_id"],
                              session=row["session_id"], sequence=row["sequence"], spacing_mm=spacing)
        return out

    return transform


def device_transform(name: str, severity: int, spacing: float):
    """The device path: ``transform(batch, rows)`` on the batch where it is, each scan with the
    parameters :func:`~bench.perturbations.draw_parameters` gives the CPU path."""
    from bench.perturbations_torch import perturb_batch

    def transform(batch, rows):
        params = [draw_parameters(name, severity, seed=PERTURBATION_SEED, subject=row["participant_id"],
                                  session=row["session_id"], sequence=row["sequence"]) for _, row in rows.iterrows()]
        return perturb_batch(batch, name, params, spacing)

    return transform


def one_per_subject(ctx: Context, idx: np.ndarray) -> np.ndarray:
    """The first example (in table order: the earliest session) of each subject among ``idx``.

    Robustness is scored on one example per subject: 50 perturbed copies of every session of
    every subject would cost 50 embedding passes over the whole test split, and a subject's
    sessions mostly repeat the same anatomy. The clean reference is scored on the same examples.
    """
    idx = np.asarray(idx, dtype=int)
    return idx[~ctx.examples.table.iloc[idx]["participant_id"].duplicated().to_numpy()]


@phase("heads")
def _score_all(ctx: Context, heads: dict, eval_idx: dict[str, np.ndarray], setting: Setting,
               keep: bool) -> list:
    out = []
    for seed, head in heads.items():
        for split, idx in eval_idx.items():
            data = head_data(ctx, idx)
            pred = head.predict(data)
            out.append(setting_score(ctx, idx, split, seed, setting, data.y, pred, dict(head.chosen)))
            if keep:
                record_predictions(ctx, idx, split, seed, setting, data.y, pred)
    return out


def summarise_robustness(scores: list, metric: str, higher_is_better: bool,
                         scans: list[list[str]] | None = None, severities=SEVERITIES) -> dict:
    """Score per perturbation x severity, relative to clean, per evaluation split (means over seeds);
    with ``scans`` (``[subject, session, sequence]`` of the evaluated scans) also what pins their
    perturbations: ``scans`` (sorted) and ``parameters_sha256``."""
    by_split: dict[str, dict] = {}
    for split in EVAL_SPLITS:
        rows = [s for s in scores if s.split == split and s.metrics.get(metric) is not None]
        if not rows:
            continue
        mean = lambda setting: _mean([s.metrics[metric] for s in rows if s.setting == setting])  # noqa: E731
        clean = mean("clean")
        table, relative = {}, {}
        for name in PERTURBATIONS:
            table[name], relative[name] = {}, {}
            for severity in severities:
                value = mean(f"{name}@{severity}")
                table[name][str(severity)] = value
                relative[name][str(severity)] = _relative(value, clean, higher_is_better)
        rel_values = [v for r in relative.values() for v in r.values() if v is not None]
        by_split[split] = {
            "clean": clean,
            "score": table,
            "relative": relative,
            "mean_relative_drop": {n: (None if not [v for v in r.values() if v is not None] else
                                       float(1 - np.mean([v for v in r.values() if v is not None])))
                                   for n, r in relative.items()},
            "robustness_score": float(np.mean(rel_values)) if rel_values else None,
        }
    return {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "perturbation_seed": PERTURBATION_SEED,
        "robustness_score": by_split.get("test", {}).get("robustness_score"),
        "splits": by_split,
        "levels": {p.name: {"description": p.description, "unit": p.unit, "levels": list(p.levels)}
                   for p in PERTURBATIONS.values()},
        "severities": [int(s) for s in severities],
        **(_pinned(scans, severities) if scans is not None else {}),
    }


def _pinned(scans: list[list[str]], severities=SEVERITIES) -> dict:
    """The evaluated scans (sorted) and the SHA-256 of their parameters at every perturbation x severity."""
    scans = sorted([str(a), str(b), str(c)] for a, b, c in scans)
    params = draw_all(scans, PERTURBATION_SEED, list(PERTURBATIONS), list(severities))
    return {"scans": scans, "parameters_sha256": parameters_digest(params)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _relative(value: float | None, clean: float | None, higher_is_better: bool) -> float | None:
    """score / clean (or clean / score where lower is better): 1 = as good as clean."""
    if value is None or clean is None:
        return None
    num, den = (value, clean) if higher_is_better else (clean, value)
    return float(num / den) if den else None


PROTOCOL = Protocol(
    name="robustness", run=run, label="robustness (clean)", headline=CLEAN.label, order=4, suite=True,
    description="probe heads trained on clean scans, scored under artefacts at the profile's severities",
    supports=supports, setting_params=setting_params, extra_blocks=("robustness",), one_example_per_subject=True)
