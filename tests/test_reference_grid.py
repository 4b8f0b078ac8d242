"""The harness reproduces the reference grid recorded before issue 18's redesign, number for number
(within what another CPU's kernels explain: :func:`reference_grid.record_differences`).

``tests/data/reference_grid.json.gz`` was taken at commit 975bcbb (the last commit before the
protocols, target kinds, encoder capabilities and registries became declared objects) with
``tests/reference_grid.py`` (see its docstring for the command and what is canonicalised). This
test re-runs the grid with the current code on the smoke cohort and compares every record:
scores, CIs, predictions, robustness blocks and the provenance that identifies the computation;
a job that failed or was refused then must fail or be refused the same way now.

By default the ``quick`` jobs run (every protocol, every kind of encoder, every target kind and
input mode, and the refusals; about two minutes on two cores); ``MRIBENCH_REFERENCE=full`` runs
the wider grid too.

One field was added since: each score's ``params`` now carries its setting's structured
parameters (``fraction`` for ``fractions``, ``k`` for ``few_shot``; robustness had its
``perturbation`` / ``severity`` already), which the reference lacks; they are checked against the
setting's label and then left out of the comparison.

One field was replaced since: a robustness block no longer keeps every evaluated scan's drawn
perturbation parameters (issue 17: they were most of a record's bytes) but the scans, the
severities and the parameters' SHA-256, from which ``bench verify`` recomputes them. The
reference's ``parameters`` are compared in that form (:func:`_pinned`): its scans, and the SHA-256
of its stored parameters, must be the new record's; the scores and the rest of the block as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import reference_grid as R  # noqa: E402

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "data" / "reference_grid.json.gz"
ADDED_PARAMS = {"fractions": ("fraction",), "few_shot": ("k",)}


@pytest.fixture(scope="module")
def reference() -> dict:
    return R.load(FIXTURE)


def _without_added(entry: dict, protocol: str) -> dict:
    """The record with the setting parameters added since the reference, after checking them."""
    from bench.protocols import get_protocol

    record = entry.get("record")
    if record is None:
        return entry
    for score in record["scores"]:
        for key in ADDED_PARAMS.get(protocol, ()):
            parsed = get_protocol(protocol).setting_params(score["setting"])
            assert score["params"].pop(key) == parsed[key], (score["setting"], key)
    return entry


def _pinned(entry: dict) -> dict:
    """A reference robustness record with its ``parameters`` in today's form: scans, severities and
    the SHA-256 of those stored parameters (not recomputed: the new record must name the same)."""
    from bench.perturbations import SEVERITIES, block_scans, parameters_digest

    block = (entry.get("record") or {}).get("robustness")
    if not block or "parameters" not in block:
        return entry
    params = block.pop("parameters")
    block.update(scans=sorted(block_scans({"parameters": params})), severities=list(SEVERITIES),
                 parameters_sha256=parameters_digest(params))
    return entry


def test_the_grid_matches_the_reference(reference, tmp_path):
    from bench.data.sources import open_cohort
    from bench.paths import cache_home

    full = os.environ.get("MRIBENCH_REFERENCE") == "full"
    jobs = R.grid(full)
    assert {f"{e}/{t}/{p}" for e, t, p, _ in jobs} <= set(reference)
    cohort = open_cohort(None, profile="smoke", progress=False)
    got = R.run(cohort, tmp_path / "results", cache_home(), jobs)
    problems = []
    for key, new in got.items():
        ref = _pinned(reference[key])
        new = _without_added(new, key.rsplit("/", 1)[1])
        if ref["status"] != new["status"] or ref.get("error_type") != new.get("error_type"):
            problems.append(f"{key}: {ref['status']} ({ref.get('error', '')}) -> {new['status']} ({new.get('error', '')})")
            continue
        problems += [f"{key}{d}" for d in R.record_differences(key, ref.get("record"), new.get("record"))]
    assert not problems, "\n".join(problems[:40])


def test_the_quick_grid_covers_every_protocol_encoder_kind_and_target_kind():
    from bench.kinds import KINDS
    from bench.protocols import PROTOCOLS
    from bench.tasks import get_task

    quick = R.grid(full=False)
    # every protocol that existed when the grid was taken (975bcbb); protocols added since, e.g.
    # finetune_fractions and reliability, have no reference to equal and are tested on their own
    since = {"finetune_fractions", "reliability", "site"}
    assert {p for _, _, p, _ in quick} == set(PROTOCOLS) - since
    assert {get_task(t).target.name for _, t, _, _ in quick} == set(KINDS)
    assert {get_task(t).is_sequence for _, t, _, _ in quick} == {True, False}
    assert {e for e, _, _, _ in quick} >= {"random", "oracle", "volumes", "intensity", "features", "simclr3d@init",
                                           "temporal@init", "supervised"}


def _bumped(record: dict, path: tuple, factor: float) -> dict:
    """A copy of ``record`` with the number at ``path`` (keys and indices) multiplied by ``factor``."""
    import json

    out = json.loads(json.dumps(record))
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] *= factor
    return out


@pytest.mark.parametrize("key, path", [
    ("random/tumour_marker/linear_probe", ("scores", 0, "metrics", "balanced_accuracy")),
    ("random/tumour_marker/linear_probe", ("predictions", 0, "y_pred", 1)),
    ("random/tumour_marker/finetune", ("scores", 0, "params", "best_val_loss")),
    ("oracle/time_to_conversion/fractions", ("scores", 0, "metrics", "c_index")),
    ("volumes/brain_age/linear_probe", ("main_score",)),
])
def test_the_comparison_catches_a_one_percent_change(reference, key, path):
    """The tolerances let kernels' float noise through, not a regression: a number 1 % off fails
    (2 % on a fine-tuned network's; numbers near 1, the tolerance being relative to max(1, |x|)), as
    does an example moved to another split."""
    record = reference[key]["record"]
    assert R.record_differences(key, record, record) == []
    factor = 1.02 if "finetune" in key else 1.01
    assert R.record_differences(key, record, _bumped(record, path, factor)), (key, path)
    moved = _bumped(record, ("scores", 0, "n_examples"), 1)
    moved["predictions"][0]["split"] = "external" if moved["predictions"][0]["split"] == "test" else "test"
    assert R.record_differences(key, record, moved)


def test_ill_conditioned_settings_are_compared_by_shape_only(reference):
    key = "oracle/time_to_conversion/fractions"
    record = reference[key]["record"]
    i = next(i for i, p in enumerate(record["predictions"]) if p["setting"] == "fraction=1")
    assert R.record_differences(key, record, _bumped(record, ("predictions", i, "y_pred"), 1e3)) == []
    relabelled = _bumped(record, ("predictions", i, "y_true", 0), 2.0)
    assert R.record_differences(key, record, relabelled)
