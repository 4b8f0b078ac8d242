"""``leaderboard/index.html``: one static, self-contained page (no server, no network).

Everything is inline: the style sheet, a small script (sortable tables, task / protocol
filters) and the plots as ``data:`` URIs, so the file can be opened from disk, attached to an
e-mail or served by any static host. A Content-Security-Policy meta tag forbids the page every
network fetch (``default-src 'none'``; images only from ``data:``), so nothing it contains can
phone home even by mistake.
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from bench.leaderboard import fmt
from bench.leaderboard.board import Board, Overall, TaskTable
from bench.leaderboard.reliability_rows import INTRO as RELIABILITY_INTRO, cells as reliability_cells
from bench.leaderboard.site_rows import INTRO as SITE_INTRO, cells as site_cells
from bench.leaderboard.plots import Plot
from bench.leaderboard.render_markdown import (CARD_HEADER, CROSS_COHORT_TITLE, LABEL_EFFICIENCY_INTRO, ROBUSTNESS_INTRO,
                                               card_cells, cd_text, fraction_cells, method_notes, overall_intro,
                                               rank_rule, task_heading_text, transfer_groups, transfer_intro)
from bench.leaderboard.sections import power_text

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --band: #f5f7fb; --accent: #2357c6;
        --gold: #fff3c4; --warn: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--ink); background: #fff; }
header { background: #1d2330; color: #fff; padding: 22px 32px 16px; }
header h1 { margin: 0 0 4px; font-size: 24px; letter-spacing: .2px; }
header p { margin: 0; color: #c9d1e0; font-size: 14px; }
header p.note-line { margin-top: 6px; color: #e6ebf3; }
header code { color: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 48px; }
.filters { position: sticky; top: 0; z-index: 2; background: rgba(255,255,255,.96); display: flex;
           flex-wrap: wrap; gap: 18px; align-items: center; padding: 12px 0; border-bottom: 1px solid var(--line); }
.filters label { font-weight: 600; font-size: 14px; }
.filters select { margin-left: 6px; font: inherit; padding: 3px 6px; }
#visible-count { color: var(--muted); font-size: 13px; margin-left: auto; }
section { margin-top: 26px; }
h2 { font-size: 19px; margin: 0 0 4px; }
h2 .version { color: var(--muted); font-weight: 400; font-size: 15px; }
.desc { color: var(--muted); margin: 2px 0 10px; max-width: 900px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 6px; font-size: 14px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: var(--band); border-bottom: 2px solid var(--line); padding: 0; }
thead th button { all: unset; cursor: pointer; display: block; padding: 7px 10px; font-weight: 600; width: 100%;
                  box-sizing: border-box; }
thead th.num button { text-align: right; }
thead th button:focus-visible { outline: 2px solid var(--accent); }
thead th .arrow { display: inline-block; width: 1em; color: var(--accent); }
th[aria-sort="ascending"] .arrow::after { content: "\\25B2"; font-size: 10px; }
th[aria-sort="descending"] .arrow::after { content: "\\25BC"; font-size: 10px; }
tbody tr:hover { background: #f0f4fc; }
tr.group-1 td.rank { background: var(--gold); font-weight: 700; }
td .ci { color: var(--muted); font-size: 12.5px; }
.flag { color: var(--warn); font-weight: 600; }
.hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px; margin-top: 10px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure.narrow { max-width: 640px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.cd { background: var(--band); border-radius: 6px; padding: 10px 14px; max-width: 900px; }
.note { color: var(--muted); font-size: 13.5px; }
.hidden { display: none !important; }
.dimmed { opacity: .35; }
ul.refused li { margin: 3px 0; }
footer { margin-top: 36px; color: var(--muted); font-size: 13px; }
"""

SCRIPT = """
(function () {
  "use strict";
  function cellValue(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (type === "num") {
      var value = parseFloat(raw);
      return isNaN(value) ? null : value;
    }
    return raw.toLowerCase();
  }
  function sortBy(th) {
    var table = th.closest("table");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var type = th.getAttribute("data-type") || "text";
    var direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, i) { row.setAttribute("data-order", i); });
    rows.sort(function (a, b) {
      var x = cellValue(a, index, type), y = cellValue(b, index, type);
      var result;
      if (x === null && y === null) { result = 0; }
      else if (x === null) { return 1; }          /* missing values stay last either way */
      else if (y === null) { return -1; }
      else { result = x < y ? -1 : (x > y ? 1 : 0); }
      if (direction === "descending") { result = -result; }
      return result || (a.getAttribute("data-order") - b.getAttribute("data-order"));
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    var button = th.querySelector("button");
    if (button) { button.addEventListener("click", function () { sortBy(th); }); }
  });

  var taskSelect = document.getElementById("filter-task");
  var protocolSelect = document.getElementById("filter-protocol");
  function applyFilters() {
    var task = taskSelect.value, protocol = protocolSelect.value;
    var shown = 0;
    document.querySelectorAll("section.task").forEach(function (section) {
      var taskOk = !task || section.getAttribute("data-task") === task;
      var visibleRows = 0;
      section.querySelectorAll("[data-protocol]").forEach(function (el) {
        var ok = taskOk && (!protocol || el.getAttribute("data-protocol") === protocol);
        el.classList.toggle("hidden", !ok);
        if (ok && el.classList.contains("entry")) { visibleRows += 1; }
      });
      section.querySelectorAll(".protocol-block").forEach(function (block) {
        block.classList.toggle("hidden", !block.querySelector("[data-protocol]:not(.hidden)"));
      });
      section.classList.toggle("hidden", !taskOk || visibleRows === 0);
      shown += visibleRows;
    });
    document.querySelectorAll("table.overall [data-task]").forEach(function (el) {
      el.classList.toggle("dimmed", !!task && el.getAttribute("data-task") !== task);
    });
    document.getElementById("visible-count").textContent = shown + " of " + TOTAL + " entries shown";
  }
  var TOTAL = document.querySelectorAll("section.task tr.entry").length;
  taskSelect.addEventListener("change", applyFilters);
  protocolSelect.addEventListener("change", applyFilters);
  applyFilters();
})();
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _inline_markdown(text: str) -> str:
    """Escape, then turn the notes' ``**bold**`` and backtick code into HTML."""
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _e(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _th(label: str, kind: str = "text") -> str:
    cls = ' class="num"' if kind == "num" else ""
    return (f'<th scope="col" data-type="{kind}"{cls}><button type="button">{_e(label)}'
            f'<span class="arrow" aria-hidden="true"></span></button></th>')


def _num_td(text: str, value: float | int | None, extra: str = "") -> str:
    sort = "" if value is None else f' data-sort="{value!r}"'
    return f'<td class="num{extra}"{sort}>{text}</td>'


def _figure(plot: Plot, out_dir: Path) -> str:
    wide = {"robustness": " wide", "critical_difference": " narrow"}.get(plot.kind, "")
    proto = f' data-protocol="{_e(plot.protocol)}"' if plot.protocol else ""
    return (f'<figure class="plot{wide}"{proto}><img src="{_data_uri(out_dir / plot.png)}" alt="{_e(plot.alt)}">'
            f'<figcaption>{_e(plot.title)} &middot; <a href="{_e(plot.svg)}">SVG</a></figcaption></figure>')


def _overall(summary: Overall, board: Board, out_dir: Path, several: bool) -> str:
    head = "".join([_th("encoder"), _th("mean rank", "num"), _th("tasks", "num")] + [_th(t, "num") for t in summary.tasks])
    body = []
    for r in summary.rows:
        role = f' <span class="flag">{_e(r.role)}</span>' if r.role else ""
        cells = [f"<td>{_e(r.encoder)}{role}</td>", _num_td(fmt.num(r.mean_rank, 2), r.mean_rank),
                 _num_td(f"{r.n_tasks}/{len(summary.tasks)}", r.n_tasks)]
        cells += [f'<td class="num" data-task="{_e(t)}"' + ("" if r.ranks[t] is None else f' data-sort="{r.ranks[t]}"')
                  + f'>{"-" if r.ranks[t] is None else r.ranks[t]}</td>' for t in summary.tasks]
        body.append(f"<tr>{''.join(cells)}</tr>")
    figs = "".join(_figure(p, out_dir) for p in board.plots
                   if p.kind == "critical_difference" and p.cohort == summary.cohort)
    return (f'<section class="overall" id="overall-{_e(summary.cohort)}"><h2>Overall'
            + (f' <span class="version">{_e(summary.cohort)}</span>' if several else "") + "</h2>"
            f'<p class="desc">{_inline_markdown(overall_intro(summary))}</p>'
            f'<table class="sortable overall"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<p class="cd"><strong>Overall test.</strong> {_e(cd_text(summary, name=str))}</p>'
            + (f'<div class="plots">{figs}</div>' if figs else "") + "</section>")


def _entry_row(r, board: Board) -> str:
    e = r.entry
    score = "-" if e.score is None else (_e(r.status) if r.status else
                                         f'{e.score:.3f} <span class="ci">({_e(fmt.interval_text(e))})</span>')
    flag = (f'<span class="flag" title="{_e(e.overlap)}">pretraining overlap</span>' if e.overlap else "")
    if e.submitted:
        flag += f'<span class="flag" title="bench submit bundle {_e(e.submitted)}">submitted</span>'
    held = fmt.held_rank(r)
    if held:
        flag += f'<span class="flag" title="{_e(", ".join(r.beaten_by))}">{_e(held)}</span>'
    group = f"entry group-{r.group}" if r.group else "entry"
    p = None if r.vs_best is None else r.vs_best.p_adjusted
    return (f'<tr class="{group}" data-protocol="{_e(e.protocol)}" data-encoder="{_e(e.encoder)}">'
            + _num_td(fmt.rank(r), r.rank, " rank")
            + f"<td>{_e(e.encoder)}</td><td>{_e(fmt.protocol_label(e.protocol))}</td>"
            + _num_td(score, e.score)
            + f'<td data-sort="{"" if p is None else p}">{_e("-" if r.status else fmt.comparison(r.vs_best))}</td>'
            + f"<td>{_e(fmt.seeds(e))}</td>"
            + _num_td("-" if e.n_test_subjects is None else str(e.n_test_subjects), e.n_test_subjects)
            + f'<td>v{e.record.task_version}</td><td class="hash" title="{_e(e.record.provenance.split_sha256)}">'
              f"{_e(e.split_sha_short)}</td><td>{flag}</td></tr>")


def _plain_table(css: str, header: list[str], rows: list[list[str]], protocol: str, entries: bool = False) -> str:
    """A sortable table of already-plain cells (escaped here), the encoder first; ``entries``: each row
    is a record of the board (counted by the filters' "entries shown")."""
    head = "".join(_th(h, "text" if i == 0 else "num") for i, h in enumerate(header))
    cls = ' class="entry"' if entries else ""
    body = "".join(f'<tr{cls} data-protocol="{_e(protocol)}" data-encoder="{_e(c[0])}"><td>{_e(c[0])}</td>'
                   + "".join(f'<td class="num">{_e(v)}</td>' for v in c[1:]) + "</tr>" for c in rows)
    return f'<table class="sortable {css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _robustness(table: TaskTable) -> str:
    rows = [[r.encoder, fmt.num_with_ci(r.clean, *r.clean_ci), fmt.robustness_score(r),
             "-" if r.worst is None else f"{r.worst} ({100 * r.worst_drop:.1f} % drop)"] for r in table.robustness]
    header = ["encoder", f"clean {table.metric} (95 % interval)", "robustness (chance-corrected)", "worst artefact"]
    return (f'<div class="protocol-block"><h3 class="note">{_e(ROBUSTNESS_INTRO)}</h3>'
            + _plain_table("robustness", header, rows, "robustness")
            + f'<p class="note">{_e(fmt.chance_note(table.robustness))}</p></div>')


def _task(table: TaskTable, board: Board, out_dir: Path) -> str:
    head = "".join([_th("rank", "num"), _th("encoder"), _th("protocol"), _th(f"{table.metric} (95 % interval)", "num"),
                    _th("Holm p vs best", "num"), _th("seeds"), _th("n test", "num"), _th("task"), _th("split"),
                    _th("flags")])
    body = "".join(_entry_row(r, board) for r in table.rows)
    parts = [f'<section class="task" id="{_e(table.anchor)}" data-task="{_e(table.task)}">',
             f'<h2>{_e(table.task)} <span class="version">v{table.version} &middot; {_e(table.cohort)}</span></h2>',
             f'<p class="desc">{_e(table.description)} {_inline_markdown(task_heading_text(table))}</p>',
             f'<p class="power note">{_e(power_text(table.power))}</p>',
             f'<table class="sortable entries"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>']
    if table.label_efficiency:
        header, rows = fraction_cells(table)
        parts.append(f'<div class="protocol-block"><h3 class="note">{_inline_markdown(LABEL_EFFICIENCY_INTRO)}</h3>'
                     + _plain_table("fractions", header, rows, "fractions", entries=True) + "</div>")
    if table.robustness:
        parts.append(_robustness(table))
    if table.reliability:
        header, rows = reliability_cells(table.reliability)
        parts.append(f'<div class="protocol-block"><h3 class="note">{_e(RELIABILITY_INTRO)}</h3>'
                     + _plain_table("reliability", header, rows, "reliability", entries=True) + "</div>")
    if table.site:
        header, rows = site_cells(table.site)
        parts.append(f'<div class="protocol-block"><h3 class="note">{_e(SITE_INTRO)}</h3>'
                     + _plain_table("site", header, rows, "site", entries=True) + "</div>")
    figs = [_figure(p, out_dir) for p in board.plots if p.task == table.task and p.cohort == table.cohort]
    if figs:
        parts.append(f'<div class="plots">{"".join(figs)}</div>')
    parts.append("</section>")
    return "".join(parts)


def _score_cell(entry) -> str:
    if entry is None or entry.score is None:
        return _num_td("-", None)
    return _num_td(f'{entry.score:.3f} <span class="ci">({_e(fmt.interval_text(entry))})</span>', entry.score)


def _cross_cohort(board: Board) -> str:
    """The cross-cohort section: one table per task and transfer, unranked."""
    if not board.cross_cohort:
        return ""
    parts = [f'<section id="cross-cohort"><h2>{_e(CROSS_COHORT_TITLE)}</h2>',
             f'<p class="desc">{_inline_markdown(transfer_intro())}</p>']
    for group in transfer_groups(board.cross_cohort):
        first = group[0]
        head = "".join([_th("encoder"), _th(f"cross-cohort {first.metric} (95 % CI)", "num"), _th("scored on"),
                        _th("n scored", "num"), _th(f"in-distribution linear probe {first.metric} (95 % CI)", "num"),
                        _th("drop", "num"), _th("split"), _th("flags")])
        body = "".join(
            f'<tr class="transfer" data-encoder="{_e(r.encoder)}"><td>{_e(r.encoder)}</td>{_score_cell(r.entry)}'
            f"<td>{_e(r.split)}</td>{_num_td(_e(r.entry.n_test_subjects or '-'), r.entry.n_test_subjects)}"
            f"{_score_cell(r.in_distribution)}{_num_td(_e(fmt.drop_with_ci(r.drop, r.drop_ci)), r.drop)}"
            f'<td class="hash" title="{_e(r.entry.record.provenance.split_sha256)}">{_e(r.entry.split_sha_short)}</td>'
            f"<td>{_e(fmt.short_flags(r))}</td></tr>" for r in group)
        parts.append(f'<h3>{_e(first.task)} <span class="version">v{first.version} &middot; {_e(first.train)} '
                     f'&rarr; {_e(first.test)}</span></h3><p class="note">Scored as task {_e(first.test_task)}.</p>'
                     f'<table class="sortable cross-cohort"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "".join(parts) + "</section>"


def _cards(board: Board) -> str:
    """The encoder cards, every cell escaped (a card is text its author wrote)."""
    if not board.cards:
        return ""
    head = "".join(_th(h, "num" if h in ("parameters", "embed dim") else "text") for h in CARD_HEADER)
    rows = []
    for c in board.cards:
        cells = [_e(v) for v in card_cells(c)]
        sorts = {2: c.n_parameters, 3: c.embed_dim}
        tds = [_num_td(v, sorts[i]) if i in sorts else
               (f'<td class="hash" title="{_e(c.checkpoint_sha256 or "")}">{v}</td>' if i == 7 else f"<td>{v}</td>")
               for i, v in enumerate(cells)]
        rows.append(f'<tr data-encoder="{_e(c.encoder)}">{"".join(tds)}</tr>')
    return ('<section id="encoder-cards"><h2>Encoder cards</h2><p class="desc">As each encoder\'s records carry '
            "its card (<code>provenance.encoder_card</code>); checkpoint: the first 12 hex digits of its SHA-256.</p>"
            f'<table class="sortable cards"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "</section>")


def render_html(board: Board, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` (the plots must already be in ``out_dir``: they are inlined)."""
    from bench.atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    several = len(board.cohorts) > 1
    tasks = sorted({t.task for t in board.tables})
    task_options = "".join(f'<option value="{_e(t)}">{_e(t)}</option>' for t in tasks)
    protocol_options = "".join(f'<option value="{_e(p)}">{_e(p.replace("_", " "))}</option>' for p in board.protocols)
    refused = ""
    if board.refused:
        items = "".join(f"<li><code>{_e(r.source)}</code>: {_e(r.reason)}</li>" for r in board.refused)
        refused = f'<section id="refused"><h2>Refused records</h2><ul class="refused">{items}</ul></section>'
    notes = "".join(f"<li>{_inline_markdown(n[2:])}</li>" for n in method_notes(board))
    cross = f" ({len(board.cross_cohort)} cross-cohort)" if board.cross_cohort else ""
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>mribench leaderboard</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>mribench leaderboard</h1>
<p>{len(board.entries) + len(board.cross_cohort)} verified result records{cross} &middot; {len(board.encoders)} encoders &middot; {len(tasks)} tasks
&middot; cohort {_e(', '.join(board.cohorts))} &middot; {len(board.refused)} refused &middot;
ranks by all-pairs paired bootstrap tests, Holm-adjusted within each table ({board.n_boot} replicates, seed {board.seed})</p>
<p class="note-line"><strong>How ranks are decided.</strong> {_e(rank_rule(board))}</p>
{f'<p class="note-line">{_inline_markdown(board.note)}</p>' if board.note else ''}</header>
<main>
<div class="filters" role="search">
<label for="filter-task">Task<select id="filter-task"><option value="">all tasks</option>{task_options}</select></label>
<label for="filter-protocol">Protocol<select id="filter-protocol"><option value="">all protocols</option>
{protocol_options}</select></label>
<span id="visible-count" aria-live="polite"></span>
</div>
{''.join(_overall(s, board, out_dir, several) for s in board.overall)}
{''.join(_task(t, board, out_dir) for t in board.tables)}
{_cross_cohort(board)}{_cards(board)}
{refused}
<section id="notes"><h2>How to read this</h2><ul class="note">{notes}</ul></section>
<footer>Static page rendered by <code>bench leaderboard</code>; no server, no network. Click a column header to
sort; the filters hide tasks and protocols.</footer>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
    path = out_dir / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"), mode=0o644)
    return path
