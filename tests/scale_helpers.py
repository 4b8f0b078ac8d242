"""Helpers shared by the scale-out tests (test_executors.py, test_faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.results import read_record_json

#: Provenance fields that differ between two correct runs of the same grid.
VARYING = ("started_at", "wall_time_s", "command", "hardware")


def numbers(results: Path) -> dict[str, dict]:
    """What each record says (scores, summary, predictions, hashes...) without when, how fast, on
    what, or from which command line it was made; by path relative to ``results``."""
    out = {}
    for path in sorted(Path(results).rglob("*.json")):
        record = read_record_json(path)
        provenance = record.pop("provenance")
        for field in VARYING:
            provenance.pop(field)
        out[str(path.relative_to(results))] = {**record, "provenance": provenance}
    return out


def assert_same_numbers(got: dict[str, dict], want: dict[str, dict]) -> None:
    """Same records with the same scores. Scores must match exactly; per-subject predictions to
    1e-5, because an embedding computed in another batch (oneDNN picks kernels by batch size)
    can differ by ~5e-7, which may move the 6th decimal the predictions are rounded to."""
    assert got.keys() == want.keys()
    for key in want:
        g, w = dict(got[key]), dict(want[key])
        gp, wp = g.pop("predictions"), w.pop("predictions")
        assert g == w, key
        assert (gp is None) == (wp is None), key
        for a, b in zip(gp or [], wp or [], strict=True):
            assert a.keys() == b.keys(), key
            for field in a:
                if field.startswith("y_pred"):
                    assert a[field] == pytest.approx(b[field], abs=1e-5), (key, field)
                else:
                    assert a[field] == b[field], (key, field)
