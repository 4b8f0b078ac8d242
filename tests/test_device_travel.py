"""benchmarks/device_travel.py: what a device call would send, and setting aside what it need not.

The device check can only run if the tree it travels in fits the device call's limit; the tracked
tree does not (the reference weights), so the script sets parts aside and must put every byte back.
Checked on a small git repository laid out like this one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _travel():
    spec = importlib.util.spec_from_file_location("device_travel", ROOT / "benchmarks" / "device_travel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_travel"] = module
    spec.loader.exec_module(module)
    return module


def _repo(tmp_path: Path) -> Path:
    files = {"bench/x.py": 1_000, "baselines/weights/simclr3d-small.pt": 3_000,
             "baselines/weights/mae3d-small.pt": 5_000, "baselines/weights/mae3d-small.json": 30,
             "leaderboard/index.html": 2_000, "leaderboard/results/r.json": 700, "docs/figures/f.png": 400}
    for rel, size in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    (tmp_path / ".gitignore").write_text(".venv/\n")
    (tmp_path / ".venv" / "wheels").mkdir(parents=True)
    (tmp_path / ".venv" / "wheels" / "a.whl").write_bytes(b"w" * 900)
    (tmp_path / "notes.txt").write_bytes(b"n" * 50)  # untracked, not ignored: it travels
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "bench", "baselines", "leaderboard", "docs", ".gitignore"], cwd=tmp_path, check=True)
    return tmp_path


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_travelling_bytes_count_the_tree_and_the_carried_paths_only(tmp_path):
    travel, repo = _travel(), _repo(tmp_path)
    tree = 1_000 + 3_000 + 5_000 + 30 + 2_000 + 700 + 400 + len(".venv/\n") + 50
    assert travel.travelling_bytes(repo, []) == tree  # the ignored wheels stay behind
    assert travel.travelling_bytes(repo, [".venv/wheels"]) == tree + 900


def test_aside_keeps_simclr3d_and_the_records_and_back_restores_every_byte(tmp_path, capsys):
    travel, repo = _travel(), _repo(tmp_path)
    before = _digests(repo)
    assert sorted(travel.set_aside(repo)) == ["baselines/weights/mae3d-small.pt", "docs/figures/f.png",
                                              "leaderboard/index.html"]
    kept = ("baselines/weights/simclr3d-small.pt", "baselines/weights/mae3d-small.json", "leaderboard/results/r.json")
    assert all((repo / p).exists() for p in kept)
    assert travel.travelling_bytes(repo, []) == 1_000 + 3_000 + 30 + 700 + len(".venv/\n") + 50
    travel.LIMIT_BYTES = 5_000
    assert travel.main(["size", "--root", str(repo)]) == 0
    assert travel.main(["size", "--root", str(repo), "--carry", ".venv/wheels"]) == 1
    assert "too large" in capsys.readouterr().out
    assert len(travel.put_back(repo)) == 3
    assert _digests(repo) == before
    assert travel.put_back(repo) == []  # nothing left to put back
