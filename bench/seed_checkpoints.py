"""Finished seeds of a job that trains networks, kept until the job's record is written.

A fine-tuning job trains one network per seed (and per label fraction): on 2 CPU cores one
ResNet-10 seed takes tens of minutes, and a job interrupted in its last seed (a crash, Ctrl-C, a
session that ends) would otherwise lose every seed it had finished. Each finished (setting, seed)
writes its scores and kept predictions to ``<results>/.jobs/<job key>.seeds/``, beside the job's
identity (weights, cohort, profile, seeds, task and split hashes, options, whether predictions
are kept). A rerun of the same job reads them back instead of training again; a rerun with any
other identity discards them first. Every seed seeds its own generators, so a resumed job writes
the same record as an uninterrupted one. The folder is removed once the record is written, and
it lives under ``.jobs/``, which the leaderboard never reads and git ignores.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.errors import MribenchError
from bench.results import SettingScore, safe_name

IDENTITY_FILE = "identity.json"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class SeedCheckpoints:
    """The finished seeds of one job, valid for one identity."""

    def __init__(self, folder: str | Path, identity: dict[str, Any], *, fresh: bool = False):
        """``fresh`` discards whatever the folder holds (``--overwrite``: recompute everything)."""
        self.folder = Path(folder)
        self.identity = json.loads(_canonical(identity))
        marker = self.folder / IDENTITY_FILE
        if self.folder.exists() and (fresh or not self._same_identity(marker)):
            shutil.rmtree(self.folder)  # another run's seeds (other weights, profile, split...)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            atomic_write_bytes(marker, _canonical(self.identity).encode(), mode=0o644)

    def _same_identity(self, marker: Path) -> bool:
        try:
            return json.loads(marker.read_text()) == self.identity
        except (OSError, ValueError):
            return False

    def _path(self, setting: str, seed: int) -> Path:
        return self.folder / f"{safe_name(setting)}-seed{seed}.json"

    def load(self, setting: str, seed: int) -> tuple[list[SettingScore], list[dict]] | None:
        """The scores and predictions of a finished (setting, seed), or None to train it."""
        path = self._path(setting, seed)
        if not path.is_file():
            return None
        try:
            kept = json.loads(path.read_text())
            return [SettingScore.model_validate(s) for s in kept["scores"]], list(kept["predictions"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MribenchError(f"{path}: unreadable seed checkpoint ({type(e).__name__}); delete it "
                                f"to train seed {seed} of {setting} again") from e

    def save(self, setting: str, seed: int, scores: list[SettingScore], predictions: list[dict]) -> None:
        payload = {"setting": setting, "seed": seed, "scores": [s.model_dump(mode="json") for s in scores],
                   "predictions": predictions}
        atomic_write_bytes(self._path(setting, seed), json.dumps(payload).encode(), mode=0o644)

    def adopt(self, record, from_setting: str, setting: str, params: dict[str, Any], *,
              with_predictions: bool) -> list[int]:
        """Keep as finished the seeds of ``record`` (another protocol's, see ``Protocol.same_as``)
        at ``from_setting``, relabelled ``setting`` with its ``params`` first, as the protocol
        itself would have written them. Seeds already finished here are left alone; with
        ``with_predictions`` a record without its predictions lends nothing. Returns the seeds kept."""
        if with_predictions and not record.predictions:
            return []
        adopted = []
        for seed in sorted({s.seed for s in record.scores if s.setting == from_setting}):
            if self._path(setting, seed).is_file():
                continue
            scores = [s.model_copy(update={"setting": setting, "params": {**params, **s.params}})
                      for s in record.scores if s.setting == from_setting and s.seed == seed]
            rows = [{**r, "setting": setting} for r in (record.predictions if with_predictions else [])
                    if r.get("setting") == from_setting and r.get("seed") == seed]
            self.save(setting, seed, scores, rows)
            adopted.append(seed)
        return adopted

    def finished(self) -> list[str]:
        """File names of the finished seeds (for messages and tests)."""
        return sorted(p.name for p in self.folder.glob("*-seed*.json"))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def resumable_seed(ctx, setting: str, seed: int, train: Callable[[], list[SettingScore]]) -> list[SettingScore]:
    """``train()``'s scores for (setting, seed), read back from ``ctx.checkpoints`` when a previous
    run of the same job finished that seed; otherwise trained and then kept there."""
    store: SeedCheckpoints | None = ctx.checkpoints
    kept = store.load(setting, seed) if store is not None else None
    if kept is not None:
        scores, predictions = kept
        ctx.predictions.extend(predictions)
        return scores
    start = len(ctx.predictions)
    scores = train()
    if store is not None:
        store.save(setting, seed, scores, ctx.predictions[start:])
    return scores

