"""What a device run carries, with the parts of the tree the device check does not need set aside.

A device call sends a copy of the working tree (the tracked files present on disk and the untracked
files git does not ignore) plus the ignored paths it is told to carry, at most 64 MiB in all. The
tracked tree alone is over that (71 MiB, 49 of them the reference encoders' committed weights), so
the device check cannot be sent as the tree stands. It needs one of those checkpoints (simclr3d's:
``bench perf`` times the committed SSL encoder) and none of the board's rendered pages, so before a
device call ``aside`` moves the rest into an ignored folder (which does not travel), reports what
will travel with the carried paths and fails when that is over the limit; ``back`` moves every file
back, byte for byte, after the call. Nothing is committed or deleted: ``git status`` shows the set-aside
files as deleted until ``back``.

Usage (from the repository root)::

    python benchmarks/device_travel.py aside --carry .venv/device-wheels
    # the device call: carry .venv/device-wheels, command
    #   bash benchmarks/device_check.sh --wheels .venv/device-wheels --out "$OUT"
    python benchmarks/device_travel.py back
    python benchmarks/device_travel.py size --carry .venv/device-wheels   # what would travel now
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

#: What a device call may send, working tree and carried paths together.
LIMIT_BYTES = 64 * 1024 * 1024
#: Tracked files the device check does not read, as ``fnmatch`` patterns: the checkpoints (their
#: cards and loss logs stay: they are small, and the registry reads them), the board's page and figures.
ASIDE = ("baselines/weights/*.pt", "leaderboard/plots/*", "leaderboard/index.html", "leaderboard/screenshot.png",
         "docs/figures/*")
#: Files matching :data:`ASIDE` the device check reads: bench perf's committed SSL encoder.
KEEP = ("baselines/weights/simclr3d-small.pt",)
#: Where set-aside files wait (ignored by git: .venv/), and the list of what is there.
PARKING = Path(".venv/device-aside")
MANIFEST = "MANIFEST.json"


def tree_files(root: Path) -> list[str]:
    """The files a device call copies from the working tree: tracked and present, or untracked and
    not ignored (relative paths)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (root / p).is_file()})


def travelling_bytes(root: Path, carry: list[str]) -> int:
    """Bytes a device call would send: the working tree's files and every file under the carried paths."""
    total = sum((root / p).stat().st_size for p in tree_files(root))
    for path in carry:
        target = root / path
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


def to_set_aside(root: Path) -> list[str]:
    """Tracked files under :data:`ASIDE`, less :data:`KEEP`."""
    return [p for p in tree_files(root) if p not in KEEP and any(fnmatch(p, pattern) for pattern in ASIDE)]


def set_aside(root: Path) -> list[str]:
    """Move :func:`to_set_aside` into :data:`PARKING` (same relative paths) and list them there."""
    parking = root / PARKING
    if (parking / MANIFEST).exists():
        raise SystemExit(f"{parking / MANIFEST}: files are already set aside; run `back` first")
    moved = to_set_aside(root)
    for rel in moved:
        (parking / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / rel, parking / rel)
    (parking / MANIFEST).write_text(json.dumps(moved, indent=1) + "\n")
    return moved


def put_back(root: Path) -> list[str]:
    """Move every file :func:`set_aside` listed back to where it was."""
    parking = root / PARKING
    manifest = parking / MANIFEST
    if not manifest.exists():
        return []
    moved = json.loads(manifest.read_text())
    for rel in moved:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(parking / rel, root / rel)
    manifest.unlink()
    return moved


def _report(root: Path, carry: list[str]) -> int:
    size = travelling_bytes(root, carry)
    fits = size <= LIMIT_BYTES
    print(f"a device call would send {size / 2**20:.1f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB): "
          + ("fits" if fits else "too large"))
    return 0 if fits else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("aside", "back", "size"))
    p.add_argument("--carry", action="append", default=[], help="an ignored path the device call carries")
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = p.parse_args(argv)
    if args.action == "back":
        print(f"put back {len(put_back(args.root))} file(s)")
        return 0
    if args.action == "aside":
        print(f"set aside {len(set_aside(args.root))} file(s) in {PARKING}")
    return _report(args.root, args.carry)


if __name__ == "__main__":
    sys.exit(main())
