"""Names are names and text is text: what a result record may call things, and how its free text
is made inert before anyone prints or renders it.

A record is a file a stranger can write. Its encoder, task, protocol and cohort names end up in
paths (the split file a cohort names, plot file names), in terminal output and in every rendered
table, so they are held to one strict ASCII pattern (:data:`NAME`, :data:`TASK`) and refused,
never repaired: a name that needs repairing was chosen to look like another. Free text (card
descriptions, flags, provenance) is kept but stripped of control characters (:func:`strip_text`),
so an ANSI escape cannot clear a screen, retitle a window or hide a line, and is escaped for the
terminal where it is printed (:func:`term`). Cheap to import: no numpy, no torch.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: One name: an ASCII letter or digit, then letters, digits, ``_ - . @ +`` (``simclr3d@init``,
#: ``synth-default``, ``cross_cohort``), at most 64 characters. No ``/``, whitespace, control
#: character or non-ASCII letter (a Cyrillic ``а`` in ``rаndom``); ``..`` is refused separately.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}"
NAME = re.compile(_SEGMENT)
#: A task: one name, or ``namespace/name`` for a real cohort's tasks (``adni/conversion``); the
#: ``/`` only ever between two names, so never leading, trailing, doubled or beside a ``.``.
TASK = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})?")

#: ANSI escape sequences (CSI ``ESC [ ... final``, OSC ``ESC ] ... BEL or ESC \\``, and any other
#: ``ESC x``), removed whole so their parameters do not survive as stray text.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
#: Line breaks and tabs: become a space, so the words on either side stay apart.
_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x85\u2028\u2029]")
#: Every other control character (C0, DEL, C1) and the invisible format characters that reorder
#: or hide text in a terminal (bidirectional overrides and isolates, zero-width characters).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


#: A control or invisible format character in a JSON text, escaped (``\u001b``, ``\n`` inside a
#: string) or raw (C1 and format characters may be raw UTF-8; raw tabs and line breaks between
#: tokens are JSON's own whitespace, and inside a string they would not parse).
_IN_JSON = re.compile(r"\\(?:u00[01][0-9a-fA-F]|u007[fF]|u00[89][0-9a-fA-F]|u200[b-fB-F]|u202[a-eA-E]"
                      r"|u206[0-46-9]|u[fF][eE][fF][fF]|[nrtbf])|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f"
                      r"\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def json_has_control(text: str) -> bool:
    """Whether a JSON text may hold a control character in a string (false alarms possible, misses
    not): lets a reader skip walking a million prediction rows that cannot need stripping."""
    return _IN_JSON.search(text) is not None


def name_problem(kind: str, value: object) -> str | None:
    """Why ``value`` is not a legal ``kind`` name (``encoder``, ``cohort``, ``protocol``, ``task``);
    None when it is. The value is shown with ``repr`` so control characters print as escapes."""
    pattern = TASK if kind == "task" else NAME
    if not isinstance(value, str):
        return f"{kind} name must be a string, not {type(value).__name__}"
    if not pattern.fullmatch(value) or ".." in value:
        allowed = "names joined by one '/'" if kind == "task" else "no '/'"
        return (f"{kind} name {value!r} is not a name: ASCII letters and digits first, then letters, digits, "
                f"'_', '-', '.', '@' or '+' ({allowed}, no '..', at most 64 characters)")
    return None


def check_name(kind: str, value: object) -> str:
    """``value`` when it is a legal ``kind`` name, else ``ValueError`` (pydantic reports it one line)."""
    problem = name_problem(kind, value)
    if problem:
        raise ValueError(problem)
    return value  # type: ignore[return-value]


def strip_text(text: str) -> str:
    """``text`` without ANSI escapes and control or invisible format characters (line breaks and
    tabs become spaces): what a record's free text may show a terminal or a page."""
    if text.isprintable():  # the common case costs one C-level scan
        return text
    return _CONTROL.sub("", _BREAKS.sub(" ", _ANSI.sub("", text)))


_LEAF = (float, int, bool, type(None))


def strip_tree(value: Any) -> Any:
    """A JSON value with :func:`strip_text` applied to every string in it, keys included (a list
    of numbers, the bulk of a record, is returned as it is without a call per number)."""
    if isinstance(value, str):
        return strip_text(value)
    if isinstance(value, dict):
        return {strip_text(k) if isinstance(k, str) else k: v if type(v) in _LEAF else strip_tree(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [strip_tree(v) for v in value] if any(type(v) not in _LEAF for v in value) else value
    return value


def term(text: object) -> str:
    """Record text for a rich console: control characters stripped and markup escaped, so an
    encoder called ``[/]`` prints as itself instead of ending the command with a ``MarkupError``,
    and ``[click]`` is shown rather than swallowed as a style tag."""
    from rich.markup import escape

    return escape(strip_text(str(text)))


#: ASCII look-alikes folded together by :func:`skeleton` (after NFKC and case folding): digits
#: read as letters, and the separators a name may swap without looking different.
_LOOKALIKE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "_": "", "-": "", ".": "",
                            "@": "", "+": ""})
#: Letters of other scripts that render like ASCII ones (Unicode's confusables for the Latin
#: letters a name may use); the strict pattern refuses them anyway, this keeps the fold honest.
_SCRIPTS = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
                          "ј": "j", "ѕ": "s", "к": "k", "м": "m", "н": "h", "т": "t", "в": "b", "ԁ": "d",
                          "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "ε": "e"})


def skeleton(name: str) -> str:
    """What a name looks like: NFKC-normalised, case-folded, other scripts' look-alike letters and
    ASCII look-alikes (``0``/``o``, ``1``/``l``/``i``, ``rn``/``m``, separators) folded, so two
    names that a reader cannot tell apart have the same skeleton."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_SCRIPTS)
    return folded.replace("rn", "m").replace("vv", "w").translate(_LOOKALIKE)
