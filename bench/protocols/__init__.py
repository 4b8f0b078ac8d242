"""Evaluation protocols as declared objects, and their registry.

A :class:`Protocol` states every fact about one protocol in one place: its name, the function
that runs it over a :class:`~bench.protocols.context.Context`, the setting whose test score is
the record's ``main_score``, its leaderboard label, whether it needs the frozen embeddings of the
task's scans, whether it trains a network (wants a GPU), whether the leaderboard ranks it, and
``supports(task, encoder)``: the one answer to "does this protocol apply here" (``None``, or the
reason it does not), which the runner, ``bench submit`` and ``bench perf`` all ask. A ``transfer``
protocol (``cross_cohort``) trains on one cohort or site and scores another: its records are
verified and shown on the board in a section of their own, never ranked.

Each protocol lives in its own module beside this one (``probe``, ``fractions``, ``few_shot``,
``finetune``, ``robustness``, ``cross_cohort``, ``finetune_fractions``, ``reliability``; ``segmentation`` holds the decoder the probe and
fine-tune protocols use for segmentation tasks) and is registered below by one line naming its
``PROTOCOL`` object, imported on first use. Adding a protocol is one new module plus one
:meth:`~bench.registry.Registry.register` line (see ``tests/test_extensibility.py``).

Registration order is the order protocols are listed in (``bench run --help``, errors);
``order`` is their position in a leaderboard table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.errors import MribenchError
from bench.registry import Registry


def _always(spec, encoder) -> str | None:
    return None


def _no_params(label: str) -> dict[str, Any]:
    return {}


def _test_split(scores: list) -> str:
    return "test"


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (see the module docstring)."""

    name: str
    run: Callable[[Any], list]                       # Context -> list[SettingScore]
    label: str                                       # leaderboard label: the headline setting's score
    headline: str = "full"                           # setting whose test score is main_score
    description: str = ""
    needs_embeddings: bool = True                    # frozen embeddings (of kinds that use them)
    trains_network: bool = False                     # trains a network whatever the task: wants a GPU
    ranked: bool = True                              # verified and ranked by the leaderboard
    suite: bool = False                              # in `bench submit`'s standard suite
    probe_grid: bool = False                         # refits probe heads over many settings (bench perf)
    order: int = 100                                 # position in a leaderboard table
    supports: Callable[[Any, Any], str | None] = _always   # (task spec, encoder) -> reason | None
    setting_params: Callable[[str], dict[str, Any]] = _no_params  # params of a setting label (old records)
    headline_split: Callable[[list], str] = _test_split  # scores -> the split its headline is read on
    options: tuple[str, ...] = ()                    # job options it cannot run without
    accepts: tuple[str, ...] = ()                    # every job option it takes (``options`` among them)
    transfer: bool = False                           # scores another cohort / site than it trains on
    record_name: Callable[[str, dict], str] | None = None  # (cohort, options) -> record file stem
    extra_blocks: tuple[str, ...] = field(default_factory=tuple)  # ctx.extra keys copied into the record
    #: settings that train and score exactly what another protocol's setting does, as
    #: ``(label, other protocol, its label)``: a finished record of that protocol lends its seeds
    same_as: tuple[tuple[str, str, str], ...] = ()
    #: scores only the first example (earliest session) of each subject of an evaluation split,
    #: not every example; ``bench verify`` holds its predictions to that set's label digest
    one_example_per_subject: bool = False
    #: ``(metric, higher_is_better)`` of its headline when it is not the task's main score (the
    #: reliability protocol's ICC); the record's ``main_score_name`` and direction follow it
    metric: tuple[str, bool] | None = None
    #: ``bench verify``'s check of its records, ``(record, split subjects) -> problems``, for a protocol
    #: whose scores are not the task's metrics of per-example predictions (reliability)
    check: Callable[[Any, Any], list[str]] | None = None
    #: reads the cohort's same-session repeats (``Cohort.repeats``), which the cohort's hash leaves
    #: out (so that adding rescans changes no other record): the repeats' hash joins its identity
    reads_repeats: bool = False

    def embeds(self, spec) -> bool:
        """Whether a job of this protocol on ``spec`` needs the frozen embeddings of its scans."""
        return self.needs_embeddings and spec.target.uses_embeddings

    def trains(self, spec) -> bool:
        """Whether a job of this protocol on ``spec`` trains a network (a GPU helps)."""
        return self.trains_network or spec.target.trains_network

    def params_of(self, score) -> dict[str, Any]:
        """Structured parameters of a score's setting: from its ``params`` (records since the
        settings were structured), else parsed from its label (records written before)."""
        params = self.setting_params(score.setting)
        return {k: score.params.get(k, v) for k, v in params.items()}

    def main_metric(self, spec) -> tuple[str, bool]:
        """``(metric, higher_is_better)`` of the headline: the protocol's own, else the task's."""
        return self.metric or (spec.main_score, spec.higher_is_better)

    def headline_score(self, spec, scores: list) -> tuple[float | None, tuple]:
        """Mean over seeds of the main metric on the headline split (the test split unless the
        protocol says otherwise) at the headline setting, with the mean CI bounds."""
        return mean_headline(spec, self.headline, scores, self.headline_split(scores), self.main_metric(spec)[0])

    def headline_rows(self, scores: list) -> list:
        """The per-seed scores the headline is the mean of (headline setting, headline split)."""
        split = self.headline_split(scores)
        return [s for s in scores if s.setting == self.headline and s.split == split]


def mean_headline(spec, setting: str, scores: list, split: str = "test",
                  metric: str | None = None) -> tuple[float | None, tuple]:
    """Mean over seeds of ``metric`` (default ``spec.main_score``) on ``split`` at ``setting`` (and
    its CI bounds)."""
    rows = [s for s in scores if s.setting == setting and s.split == split]
    name = metric or spec.main_score
    vals = [s.metrics[name] for s in rows if s.metrics.get(name) is not None]
    if not vals:
        return None, (None, None)
    lows = [s.ci[name].low for s in rows if s.ci[name].low is not None]
    highs = [s.ci[name].high for s in rows if s.ci[name].high is not None]
    return (float(np.mean(vals)), (float(np.mean(lows)) if lows else None,
                                   float(np.mean(highs)) if highs else None))


def _check_protocol(name: str, obj: Any) -> None:
    if not isinstance(obj, Protocol) or obj.name != name:
        raise MribenchError(f"protocol registry entry '{name}' must be a Protocol named '{name}', got {obj!r}")


#: The protocols, by name.
PROTOCOLS: Registry[Protocol] = Registry("protocol", group="mribench.protocols", on_load=_check_protocol)
PROTOCOLS.register("linear_probe", "bench.protocols.probe:PROTOCOL")
PROTOCOLS.register("fractions", "bench.protocols.fractions:PROTOCOL")
PROTOCOLS.register("few_shot", "bench.protocols.few_shot:PROTOCOL")
PROTOCOLS.register("finetune", "bench.protocols.finetune:PROTOCOL")
PROTOCOLS.register("robustness", "bench.protocols.robustness:PROTOCOL")
PROTOCOLS.register("cross_cohort", "bench.protocols.cross_cohort:PROTOCOL")
PROTOCOLS.register("finetune_fractions", "bench.protocols.finetune_fractions:PROTOCOL")
PROTOCOLS.register("reliability", "bench.protocols.reliability:PROTOCOL")
PROTOCOLS.register("site", "bench.protocols.site:PROTOCOL")


def get_protocol(name: str) -> Protocol:
    """The registered protocol ``name``, or a one-line error listing them."""
    return PROTOCOLS.lookup(name)


def all_protocols() -> list[Protocol]:
    """Every registered protocol, in registration order."""
    return [PROTOCOLS[name] for name in PROTOCOLS]


def by_order() -> list[Protocol]:
    """Every registered protocol in leaderboard order."""
    return sorted(all_protocols(), key=lambda p: (p.order, p.name))


def ranked() -> Mapping[str, Protocol]:
    """The protocols the leaderboard verifies and ranks, in leaderboard order."""
    return {p.name: p for p in by_order() if p.ranked}


def check_protocols(protocols: list[str], options: Mapping[str, Any] | None = None) -> None:
    """Every name is a registered protocol whose required options are given; else a one-line error."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise MribenchError(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
    for name in protocols:
        missing = [o for o in PROTOCOLS[name].options if (options or {}).get(o) is None]
        if missing:
            raise MribenchError(f"protocol {name} needs {', '.join(missing)}; run it with `bench {name.replace('_', '-')}`")


def needs_embeddings(name: str, spec) -> bool:
    return get_protocol(name).embeds(spec)
