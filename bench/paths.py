"""Where mribench keeps generated cohorts and caches (override with MRIBENCH_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$MRIBENCH_CACHE``, else ``$XDG_CACHE_HOME/mribench``, else ``~/.cache/mribench``."""
    if os.environ.get("MRIBENCH_CACHE"):
        return Path(os.environ["MRIBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mribench"


def repo_root() -> Path:
    """The checkout holding tasks/ and splits/ (the package's parent folder)."""
    return Path(__file__).resolve().parent.parent


def splits_root() -> Path:
    """Where split files live: ``$MRIBENCH_SPLITS`` if set, else the checkout's ``splits/``.

    The override lets tests and users with private cohorts (whose subject lists may not be
    shared) keep split files outside the repository without editing task specs.
    """
    if os.environ.get("MRIBENCH_SPLITS"):
        return Path(os.environ["MRIBENCH_SPLITS"]).expanduser()
    return repo_root() / "splits"


def display_path(path: str | os.PathLike) -> str:
    """Repo-relative when inside the checkout (records carry no machine-specific paths), else the name."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return Path(path).name


def split_display_path(path: str | os.PathLike) -> str:
    """A split file as records name it: relative to the folder holding the splits root
    (``splits/synth-default/ad.tsv``), wherever ``MRIBENCH_SPLITS`` puts that root; else as
    :func:`display_path` gives it."""
    root = splits_root().resolve()
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root.parent).as_posix()
    return display_path(path)
