"""A checkpoint's whole training lineage: its own steps and those of every checkpoint it was
warm-started from (``pretraining_data.init_from``), followed through the committed cards.

A card states the steps of its own run (``pretraining_data.steps``) and, under ``init_from``, the
hash and steps of the checkpoint it started from, one link deep. Quoting the card's own steps for
a warm-started checkpoint understates its training (the committed simclr3d card says 800 steps;
its ``init_from`` holds 1,500 more), so documents show the total over the chain. The chain is
followed by checkpoint hash through the cards passed in (the committed cards for the documents,
the records' cards for the leaderboard); a link whose hash matches none of them (e.g. a run's
``last.pt``, which no card names) ends the chain, and the lineage says that it may go further.
Derived at display time: committed cards and the cards inside records stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """One checkpoint of a chain: what the card calls it and the steps of its own run."""

    name: str
    steps: int | None


@dataclass(frozen=True)
class Lineage:
    """The checkpoint first, then what it started from, and so on. ``complete`` is False when the
    last link's own card is not committed (it may itself have been warm-started)."""

    links: tuple[Link, ...]
    complete: bool

    @property
    def total_steps(self) -> int | None:
        """Steps over the whole chain; None when a link does not state its steps."""
        steps = [link.steps for link in self.links]
        return None if any(s is None for s in steps) else sum(steps)

    def describe(self) -> str:
        """``2,300 (800 + 1,500 from init_from)``; the bare count for a checkpoint trained from its
        init; ``-`` when a link's steps are unknown."""
        total = self.total_steps
        if total is None:
            return "-"
        if len(self.links) == 1:
            return f"{total:,}"
        parts = " + ".join(f"{link.steps:,}" for link in self.links)
        tail = "" if self.complete else "; the last link's own card is not among those read: may go further"
        return f"{total:,} ({parts} from init_from{tail})"


def _steps(data: dict) -> int | None:
    value = data.get("steps")
    return int(value) if isinstance(value, (int, float)) else None


def lineage(card: dict, cards: list[dict]) -> Lineage:
    """The lineage of ``card`` through ``cards`` (any committed cards; matched by checkpoint hash)."""
    by_hash = {c.get("checkpoint_sha256"): c for c in cards if c.get("checkpoint_sha256")}
    data = card.get("pretraining_data") or {}
    links = [Link(str(card.get("name")), _steps(data))]
    seen = {card.get("checkpoint_sha256")}
    source = data.get("init_from")
    while isinstance(source, dict):
        sha = source.get("checkpoint_sha256")
        parent = by_hash.get(sha)
        if parent is None or sha in seen:
            links.append(Link(str(source.get("encoder")), _steps(source)))
            return Lineage(tuple(links), complete=False)
        seen.add(sha)
        parent_data = parent.get("pretraining_data") or {}
        links.append(Link(str(parent.get("name")), _steps(parent_data)))
        source = parent_data.get("init_from")
    return Lineage(tuple(links), complete=True)
