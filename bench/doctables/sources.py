"""The committed files the generated blocks are rendered from, each read once per process.

* **Records** under ``leaderboard/results/``, as the board reads them: verified by
  :func:`bench.leaderboard.verify.verify_path` and wrapped in the board's own
  :class:`bench.leaderboard.entries.Entry`, so a block shows ``Entry.score`` and ``Entry.ci``
  exactly as the leaderboard does. :func:`bench.leaderboard.entries.load_entries` verifies a
  whole folder; a block needs a few named records out of 373 (verifying all of them takes about
  a minute), so a record is looked up by (encoder, task, protocol) and verified alone.
* **Encoder cards**: the committed checkpoints' ``baselines/weights/*.json`` and the pretraining
  runs' ``docs/pretraining-v2/*/encoder.json`` (the links of an ``init_from`` chain).
* **Suite timing lines**: ``leaderboard/suite-timing-default.jsonl``.

A record that does not verify stops generation with one line: a document must not cite it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import MribenchError

if TYPE_CHECKING:
    from bench.leaderboard.entries import Entry

#: Verified entries by (record path, modification time, size): shared by every Sources of the process.
_ENTRIES: dict[tuple[str, int, int], Entry] = {}


def verified_entry(path: Path, source: str) -> Entry:
    """The board's entry for the record at ``path``, verified once per process (cached by path,
    modification time and size, so an edited record is verified again)."""
    from bench.leaderboard.entries import Entry
    from bench.leaderboard.verify import verify_path

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _ENTRIES:
        verdict = verify_path(path)
        if not verdict.ok:
            raise MribenchError(f"{source}: not verified ({verdict.reason}); a document cannot cite it")
        _ENTRIES[key] = Entry(record=verdict.record, source=source)
    return _ENTRIES[key]


@dataclass
class Sources:
    """The committed files under ``root`` (the repository), read lazily and cached."""

    root: Path
    results: str = "leaderboard/results"
    timing: str = "leaderboard/suite-timing-default.jsonl"
    card_globs: tuple[str, ...] = ("baselines/weights/*.json", "docs/pretraining-v2/*/encoder.json")
    _cards: dict[str, dict] | None = field(default=None, repr=False)

    def record_path(self, encoder: str, task: str, protocol: str) -> Path | None:
        """Where ``bench run`` wrote the record of (encoder, task, protocol), at the highest task
        version committed (verification refuses a version that is not the task's current one);
        None when there is none. Read from the folder names: parsing every task spec per lookup
        would cost more than the lookups."""
        from bench.results import safe_name

        folder = self.root / self.results / safe_name(encoder)
        versions = [int(m.group(1)) for p in folder.glob(f"{task}@v*")
                    if (m := re.fullmatch(re.escape(task) + r"@v(\d+)", p.name)) and (p / f"{protocol}.json").is_file()]
        return folder / f"{task}@v{max(versions)}" / f"{protocol}.json" if versions else None

    def entry(self, encoder: str, task: str, protocol: str) -> Entry | None:
        """The verified entry of (encoder, task, protocol), or None when no record is committed."""
        path = self.record_path(encoder, task, protocol)
        if path is None:
            return None
        return verified_entry(path, path.relative_to(self.root).as_posix())

    def record_files(self) -> list[Path]:
        """Every committed record file (not its predictions file), in path order."""
        root = self.root / self.results
        return sorted(p for p in root.rglob("*.json") if p.is_file() and ".jobs" not in p.relative_to(root).parts)

    def cards(self) -> dict[str, dict]:
        """Every committed card by its path relative to the root."""
        if self._cards is None:
            self._cards = {}
            for pattern in self.card_globs:
                for path in sorted(self.root.glob(pattern)):
                    self._cards[path.relative_to(self.root).as_posix()] = read_json(path)
        return self._cards

    def timing_lines(self) -> list[dict[str, Any]]:
        """The suite timing lines, in the order the suite commands appended them."""
        path = self.root / self.timing
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> Any:
    """A committed JSON file; a broken one is one line naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MribenchError(f"{path}: cannot read ({e})") from None
