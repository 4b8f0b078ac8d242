"""Check or rewrite the generated blocks of the project's documents.

The documents are README.md and every ``*.md`` under docs/. Each block is rendered once per
process however many documents hold it (the reference table is in README.md and
docs/calibration.md), so a check costs what its distinct blocks cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.doctables.blocks import Block, content_lines, find_blocks, first_difference, replace_blocks
from bench.doctables.registry import generator
from bench.doctables.sources import Sources


def documents(root: Path) -> list[Path]:
    """README.md and the markdown files under docs/, in path order."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").rglob("*.md"))


@dataclass
class Renderer:
    """Renders blocks from ``sources``, each name once."""

    sources: Sources
    _done: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str) -> str:
        if name not in self._done:
            self._done[name] = generator(name)(self.sources)
        return self._done[name]


def _label(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def blocks_of(path: Path, root: Path) -> list[Block]:
    return find_blocks(path.read_text(), _label(path, root))


def check(paths: list[Path], render: Renderer) -> list[str]:
    """One line per block that differs from what its generator gives (empty: all agree)."""
    root = render.sources.root
    problems = []
    for path in paths:
        for block in blocks_of(path, root):
            diff = first_difference(block.content, content_lines(render(block.name)))
            if diff:
                problems.append(f"{_label(path, root)}: block '{block.name}' disagrees with the committed files at "
                                f"{diff}; run `bench docs --write`")
    return problems


def write(paths: list[Path], render: Renderer) -> list[tuple[Path, int]]:
    """Rewrite every block in place; (path, number of blocks) of each file that changed."""
    root = render.sources.root
    changed = []
    for path in paths:
        text = path.read_text()
        blocks = find_blocks(text, _label(path, root))
        new = replace_blocks(text, {b.name: render(b.name) for b in blocks}, _label(path, root))
        if new != text:
            path.write_text(new)
            changed.append((path, len(blocks)))
    return changed
