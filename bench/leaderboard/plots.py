"""Leaderboard figures (matplotlib, PNG + SVG): label efficiency, few-shot, robustness, CD diagram.

Every curve is the mean over seeds (or k-shot draws) of the task's main score on the test split,
and every band / whisker is the mean over seeds of the per-seed 95 % bootstrap CI over subjects,
the same numbers the tables show. Figures are drawn with the object-oriented API (no pyplot, so
no global backend state) and saved without timestamps, so re-rendering the same records gives
the same files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.leaderboard.board import Board, Overall, TaskTable
from bench.leaderboard.entries import Entry

#: Qualitative palette (matplotlib's tab10), assigned to encoders in name order across the board.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Plot:
    """A written figure: ``png`` / ``svg`` are paths relative to the output folder."""

    kind: str            # label_efficiency | few_shot | robustness | critical_difference
    title: str
    task: str | None
    cohort: str
    protocol: str | None
    png: str
    svg: str
    alt: str


def colours(encoders: list[str]) -> dict[str, str]:
    return {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(sorted(encoders))}


def _param(protocol: str, key: str, **equal) -> Callable:
    """``score -> float | None``: the setting parameter ``key`` of a score of ``protocol`` (read
    through the protocol, so records written before settings had params are read too); None when
    the score has no such parameter or another value of the parameters named in ``equal``."""
    from bench.protocols import get_protocol

    proto = get_protocol(protocol)

    def value(score) -> float | None:
        params = proto.params_of(score)
        if key not in params or any(params.get(k) != v for k, v in equal.items()):
            return None
        return float(params[key])
    return value


def _headline(protocol: str, x: float) -> Callable:
    """``score -> x`` for the scores at ``protocol``'s headline setting (robustness: clean), else None."""
    from bench.protocols import get_protocol

    setting = get_protocol(protocol).headline
    return lambda score: x if score.setting == setting else None


def _series(entry: Entry, x_of: Callable) -> list[tuple[float, float, float | None, float | None]]:
    """(setting value, mean score, mean CI low, mean CI high) per setting value ``x_of(score)`` (None:
    not in the series) on the test split."""
    name = entry.record.main_score_name
    by_value: dict[float, list] = {}
    for s in entry.record.scores:
        x = x_of(s)
        if x is not None and s.split == "test" and s.metrics.get(name) is not None:
            by_value.setdefault(x, []).append(s)
    out = []
    for value, rows in sorted(by_value.items()):
        cis = [r.ci.get(name) for r in rows]
        lows = [c.low for c in cis if c is not None and c.low is not None]
        highs = [c.high for c in cis if c is not None and c.high is not None]
        out.append((value, float(np.mean([r.metrics[name] for r in rows])),
                    float(np.mean(lows)) if lows else None, float(np.mean(highs)) if highs else None))
    return out


def _axis_label(table: TaskTable) -> str:
    return f"{table.metric} ({'higher' if table.higher_is_better else 'lower'} is better)"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def label_efficiency(table: TaskTable, palette: dict[str, str]):
    """Score vs % of training subjects, CI bands, one line per encoder (fractions protocol)."""
    entries = table.unranked.get("fractions", [])
    if not entries:
        return None
    fig = _figure(5.2, 3.4)
    ax = fig.add_subplot()
    for e in sorted(entries, key=lambda e: e.encoder):
        pts = _series(e, _param("fractions", "fraction"))
        if not pts:
            continue
        x = np.array([100 * p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        colour = palette[e.encoder]
        ax.plot(x, y, marker="o", color=colour, label=e.encoder)
        if all(p[2] is not None and p[3] is not None for p in pts):
            ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks([1, 10, 20, 50, 100], labels=["1", "10", "20", "50", "100"])
    ax.set_xlabel("% of training subjects (nested subsets)")
    ax.set_ylabel(_axis_label(table))
    ax.set_title(f"{table.task}: label efficiency", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def few_shot_bars(table: TaskTable, palette: dict[str, str]):
    """Grouped bars: score at k = 1, 5, 10 subjects per class, whiskers = mean 95 % CI."""
    rows = sorted(table.by_protocol.get("few_shot", []), key=lambda r: r.entry.encoder)
    if not rows:
        return None
    series = {r.entry.encoder: _series(r.entry, _param("few_shot", "k")) for r in rows}
    ks = sorted({p[0] for pts in series.values() for p in pts})
    if not ks:
        return None
    fig = _figure(5.2, 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (enc, pts) in enumerate(series.items()):
        at = {p[0]: p for p in pts}
        xs = np.arange(len(ks)) + (i - (len(series) - 1) / 2) * width
        ys = [at[k][1] if k in at else np.nan for k in ks]
        err = np.array([[at[k][1] - at[k][2], at[k][3] - at[k][1]] if k in at and at[k][2] is not None
                        and at[k][3] is not None else [0.0, 0.0] for k in ks]).T
        ax.bar(xs, ys, width=width * 0.95, color=palette[enc], label=enc, yerr=err, capsize=3,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
    ax.set_xticks(np.arange(len(ks)), labels=[f"k = {int(k)}" for k in ks])
    ax.set_xlabel("training subjects per class (mean over seeded draws)")
    ax.set_ylabel(_axis_label(table))
    ax.set_title(f"{table.task}: few-shot", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def robustness_curves(table: TaskTable, palette: dict[str, str]):
    """Score vs severity (0 = clean) per perturbation, one line per encoder, CI bands."""
    rows = sorted(table.by_protocol.get("robustness", []), key=lambda r: r.entry.encoder)
    blocks = {r.entry.encoder: (r.entry, (r.entry.record.robustness or {}).get("splits", {}).get("test"))
              for r in rows}
    blocks = {k: v for k, v in blocks.items() if v[1]}
    if not blocks:
        return None
    names = sorted({p for _, b in blocks.values() for p in b.get("score", {})})
    ncols = min(5, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig = _figure(2.3 * ncols + 0.6, 2.0 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        for enc, (entry, block) in blocks.items():
            by_sev = block["score"].get(name, {})
            sev = [0] + sorted(int(s) for s in by_sev)
            ys = [block.get("clean")] + [by_sev[str(s)] for s in sev[1:]]
            ys = [np.nan if v is None else v for v in ys]
            colour = palette[enc]
            ax.plot(sev, ys, marker="o", markersize=3, color=colour, label=enc)
            # the clean setting as severity 0, so the band starts where the curve does
            band = (_series(entry, _headline("robustness", 0.0))
                    + _series(entry, _param("robustness", "severity", perturbation=name)))
            if band and all(p[2] is not None and p[3] is not None for p in band):
                ax.fill_between([p[0] for p in band], [p[2] for p in band], [p[3] for p in band],
                                color=colour, alpha=0.12, linewidth=0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(table.metric, fontsize=9)
    for ax in axes[-1, :]:
        ax.set_xlabel("severity (0 = clean)", fontsize=8)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=8, frameon=False, ncols=len(labels))
    fig.suptitle(f"{table.task}: robustness ({_axis_label(table)})", fontsize=11)
    return fig


def cd_diagram(summary: Overall, palette: dict[str, str]):
    """Mean ranks on a rank axis with the Nemenyi CD bar; encoders closer than the CD are joined."""
    cd = summary.cd
    if not cd.computed:
        return None
    ranks = sorted(cd.mean_ranks.items(), key=lambda kv: (kv[1], kv[0]))
    k = len(ranks)
    fig = _figure(6.0, 1.0 + 0.3 * k)
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 0.6), 1.6)
    ax.axhline(0, color="#333333", linewidth=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.15], color="#333333", linewidth=1)
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=8)
    for i, (enc, rank) in enumerate(ranks):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color=palette.get(enc, "#333333"), linewidth=1)
        ax.plot(rank, 0, "o", color=palette.get(enc, "#333333"), markersize=5)
        ax.text(k + 0.45, y, f"{enc} ({rank:.2f})", ha="right", va="center", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        ax.plot([rank, k + 0.45 - 0.02 * k], [y, y], color=palette.get(enc, "#333333"), linewidth=0.6, alpha=0.5)
    if cd.cd is not None:
        start = 1.0
        ax.plot([start, start + cd.cd], [1.15, 1.15], color="#d62728", linewidth=2)
        ax.text(start + cd.cd / 2, 1.25, f"CD = {cd.cd:.2f}", ha="center", va="bottom", fontsize=8, color="#d62728")
    # thick bars join maximal runs of encoders whose mean ranks are within the CD of each other
    cliques, level = [], 0
    values = [r for _, r in ranks]
    for i in range(k):
        j = max(j for j in range(i, k) if values[j] - values[i] <= (cd.cd or 0))
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    for a, b in cliques:
        level += 1
        ax.plot([values[a] - 0.03, values[b] + 0.03], [-0.25 * level, -0.25 * level], color="#111111", linewidth=3)
    ax.axis("off")
    ax.set_title(f"mean rank over {cd.n_tasks} tasks ({summary.cohort}); Friedman p = "
                 f"{cd.p_value:.3g}", fontsize=9)
    return fig


def file_stem(text: str) -> str:
    """A file-name-safe form of ``text``; where that loses anything (``adni/conversion``, a ``+`` or
    ``@`` in a cohort), a short hash of ``text`` itself is appended, so two different names can
    never share a figure's file name (and one board's figure can never overwrite another's)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    return slug if slug == text else f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _unique(stem: str, key: str, used: set[str]) -> str:
    """``stem``, or (when an earlier figure of the board took it: another version of the task) the
    stem with a short hash of the figure's full ``key``; remembered in ``used``."""
    if stem.lower() in used:  # lower case: on a case-insensitive disk A.png is a.png
        stem = f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    used.add(stem.lower())
    return stem


def _save(fig, out_dir: Path, stem: str) -> tuple[str, str]:
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.hashsalt": "mribench", "svg.fonttype": "none"}):
        fig.savefig(out_dir / f"{stem}.png", dpi=110, metadata={"Software": None})
        fig.savefig(out_dir / f"{stem}.svg", metadata={"Date": None, "Creator": None})
    return f"{out_dir.name}/{stem}.png", f"{out_dir.name}/{stem}.svg"


def write_plots(board: Board, out_dir: str | Path) -> list[Plot]:
    """Draw every figure the board's records allow into ``out_dir/plots``; return what was written."""
    out = Path(out_dir) / "plots"
    palette = colours(board.encoders)
    several = len(board.cohorts) > 1
    plots: list[Plot] = []
    used: set[str] = set()
    makers = (("label_efficiency", "fractions", label_efficiency, "label efficiency"),
              ("few_shot", "few_shot", few_shot_bars, "few-shot"),
              ("robustness", "robustness", robustness_curves, "robustness"))
    for table in board.tables:
        for kind, protocol, make, words in makers:
            fig = make(table, palette)
            if fig is None:
                continue
            stem = _unique(file_stem(f"{kind}-{table.task}" + (f"-{table.cohort}" if several else "")),
                           f"{kind}|{table.task}|{table.version}|{table.cohort}", used)
            png, svg = _save(fig, out, stem)
            encoders = ", ".join(sorted({e.encoder for e in table.entries if e.protocol == protocol}))
            plots.append(Plot(kind, f"{table.task}: {words}", table.task, table.cohort, protocol, png, svg,
                              f"{words} of {encoders} on {table.task} ({table.cohort})"))
    for summary in board.overall:
        fig = cd_diagram(summary, palette)
        if fig is None:
            continue
        stem = _unique(file_stem("critical_difference" + (f"-{summary.cohort}" if several else "")),
                       f"critical_difference|{summary.cohort}", used)
        png, svg = _save(fig, out, stem)
        plots.append(Plot("critical_difference", f"critical difference ({summary.cohort})", None,
                          summary.cohort, None, png, svg,
                          f"mean ranks and Nemenyi critical difference of {len(summary.cd.encoders)} encoders over "
                          f"{summary.cd.n_tasks} tasks"))
    return plots
