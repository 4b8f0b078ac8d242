"""Bounded YAML reading for the files a stranger can hand the harness: task specs and suites.

``yaml.safe_load`` refuses Python objects but not a "billion laughs": a 1 KB file of nested
aliases (``&a [*b, *b, ...]``) expands into gigabytes of nodes, and an error message built from the
expanded value takes as long to print. Task and suite files never need aliases, so
:func:`load_yaml` refuses the first one (at its line and column, without echoing the input), caps
the file's size, and turns an integer past 64 bits (a 5,000-digit ``seeds:``, which Python's own
``int`` refuses with a ``ValueError`` traceback) into the same one-line error. Everything else
parses exactly as ``yaml.safe_load`` does (same loader, same constructors), so a valid spec keeps
its value and the :attr:`bench.tasks.TaskSpec.sha256` that records are tied to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.errors import MribenchError

#: Largest task or suite file read: the committed ones are under 2.2 KB (``suites/default.yaml``);
#: 256 KiB is ~100x that and still parses in well under a second.
MAX_YAML_BYTES = 256 * 1024
#: Integers must fit in 64 bits (seeds, months, counts); anything past that is a typo or an attack.
INT_RANGE = (-(2**63), 2**63 - 1)


class _RefusedInput(yaml.MarkedYAMLError):
    """Something a task or suite file may not hold (an alias, an integer out of range), at a mark."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and out-of-range integers, so that what it accepts
    it builds in time and memory proportional to the file (which is capped)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Refuse an alias before it is resolved: one alias is all a billion laughs needs."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _RefusedInput(None, None, f"alias *{event.anchor}: aliases are not allowed here",
                                event.start_mark)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """The integer, or a refusal at its mark when it is past 64 bits (or past what ``int`` reads)."""
        digits = len(node.value.lstrip("+-0"))
        value = super().construct_yaml_int(node) if digits <= 80 else None
        if value is None or not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise _RefusedInput(None, None, f"integer of {digits} digits out of range (at most 64 bits)",
                                node.start_mark)
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def _where(error: yaml.YAMLError) -> str:
    """'line L, column C: problem' of a YAML error, without the snippet of input PyYAML appends."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or type(error).__name__
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{at}{problem}"


def load_yaml(path: str | Path, what: str) -> Any:
    """The YAML document at ``path`` (``what`` it is, for the message): at most
    :data:`MAX_YAML_BYTES`, no aliases, integers within 64 bits; anything else is a one-line
    :class:`~bench.errors.MribenchError` naming the file and the place."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise MribenchError(f"{path}: not a valid {what} ({size} bytes, more than the {MAX_YAML_BYTES} allowed)")
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise MribenchError(f"{path}: not a valid {what} ({_where(e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MribenchError(f"{path}: cannot read {what} ({type(e).__name__}: {e.args[-1] if e.args else e})") from None
