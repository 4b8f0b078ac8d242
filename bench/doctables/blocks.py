"""Generated blocks in a markdown file: find them, replace their content, say where two differ.

A block is::

    <!-- generated: NAME (bench docs --write) -->
    ...content...
    <!-- end generated -->

HTML comments render as nothing on GitHub and in any CommonMark viewer, so a reader sees only the
content, and the two marker lines tell an editor that the lines between them are not to be typed.
Pure text processing: nothing here knows what a block holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import MribenchError

#: The command that rewrites blocks, named in every opening marker.
WRITE_COMMAND = "bench docs --write"
_OPEN = re.compile(r"^<!-- generated: ([a-z0-9][a-z0-9-]*) \(bench docs --write\) -->$")
_CLOSE = "<!-- end generated -->"


def opening(name: str) -> str:
    """The opening marker of block ``name``."""
    return f"<!-- generated: {name} ({WRITE_COMMAND}) -->"


@dataclass(frozen=True)
class Block:
    """One generated block: its name, its content lines, and where they sit in the file (the
    0-based line indices of its opening and closing markers)."""

    name: str
    content: tuple[str, ...]
    open_line: int
    close_line: int


def find_blocks(text: str, where: str = "document") -> list[Block]:
    """Every generated block of ``text`` in order; a marker without its partner (an opening inside
    an open block, a closing without an opening, an unclosed block) is an error naming ``where``
    and the line, since rewriting around it would eat the document."""
    lines = text.split("\n")
    blocks: list[Block] = []
    name, start = None, -1
    for i, line in enumerate(lines):
        stripped = line.strip()
        match = _OPEN.match(stripped)
        if match:
            if name is not None:
                raise MribenchError(f"{where}:{i + 1}: block '{match.group(1)}' opens inside block '{name}' "
                                    f"(line {start + 1}), which has no '{_CLOSE}'")
            name, start = match.group(1), i
        elif stripped == _CLOSE:
            if name is None:
                raise MribenchError(f"{where}:{i + 1}: '{_CLOSE}' without an opening marker")
            blocks.append(Block(name, tuple(lines[start + 1:i]), start, i))
            name = None
        elif stripped.startswith("<!-- generated:"):
            raise MribenchError(f"{where}:{i + 1}: malformed marker; write '{opening('NAME')}'")
    if name is not None:
        raise MribenchError(f"{where}:{start + 1}: block '{name}' has no '{_CLOSE}'")
    return blocks


def content_lines(rendered: str) -> tuple[str, ...]:
    """A generator's output as the block's content lines: one blank line after the opening and
    before the closing marker, so tables and paragraphs inside render as markdown."""
    return ("", *rendered.strip("\n").split("\n"), "")


def replace_blocks(text: str, rendered: dict[str, str], where: str = "document") -> str:
    """``text`` with the content of every block whose name is in ``rendered`` replaced."""
    lines = text.split("\n")
    for block in reversed(find_blocks(text, where)):
        if block.name in rendered:
            lines[block.open_line + 1:block.close_line] = content_lines(rendered[block.name])
    return "\n".join(lines)


def first_difference(committed: tuple[str, ...], generated: tuple[str, ...]) -> str | None:
    """``line N: committed '...' vs generated '...'`` (N within the block's content), or None when
    the two are equal."""
    for i in range(max(len(committed), len(generated))):
        a = committed[i] if i < len(committed) else "<no line>"
        b = generated[i] if i < len(generated) else "<no line>"
        if a != b:
            return f"line {i + 1} of the block: committed {_short(a)} vs generated {_short(b)}"
    return None


def _short(line: str, width: int = 160) -> str:
    return repr(line if len(line) <= width else line[: width - 3] + "...")
