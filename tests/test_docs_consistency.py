"""The tables of numbers in README.md and docs/ are the committed files' (``bench docs``).

(a) every generated block of the committed documents equals what its generator renders from the
committed records, cards and timing lines; (b) a document that disagrees with a record at its
printed precision fails with one line naming the file and the block; (c) generators on hand-made
inputs give hand-computed tables.

Rendering every block verifies about 130 of the 373 records and runs their paired tests (about
30 s on 2 cores), once per process: the records, intervals and tests are cached, so the second
and later checks cost little.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bench.cli import main
from bench.doctables.blocks import find_blocks, opening, replace_blocks
from bench.doctables.cost import passes_table, phases_table
from bench.doctables.documents import Renderer, check, documents
from bench.lineage import lineage
from bench.doctables.registry import GENERATORS
from bench.doctables.sources import Sources
from bench.errors import MribenchError
from bench.paths import repo_root

ROOT = repo_root()


@pytest.fixture(scope="module")
def render() -> Renderer:
    return Renderer(Sources(ROOT))


@pytest.mark.slow
def test_committed_documents_agree_with_the_committed_files(render):
    problems = check(documents(ROOT), render)
    assert not problems, "\n".join(problems)
    used = {b.name for path in documents(ROOT) for b in find_blocks(path.read_text())}
    assert used == set(GENERATORS), f"generators no document uses: {sorted(set(GENERATORS) - used)}"


@pytest.mark.slow
def test_a_number_off_at_its_printed_precision_fails_naming_file_and_block(render, tmp_path):
    """The reviewer's drift: oracle brain age typed as 1.71 where the record prints 1.705."""
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    table = render("reference-encoders")
    row = next(line for line in table.splitlines() if line.startswith("| brain_age "))
    oracle = row.split(" | ")[2].split(" (")[0]           # the oracle's score as printed, 3 decimals
    drifted = row.replace(f"| {oracle} (", f"| {float(oracle):.2f} (", 1)
    assert drifted != row
    readme.write_text(readme.read_text().replace(row, drifted, 1))
    (problem,) = check([readme], render)
    assert "\n" not in problem
    assert problem.startswith("README.md: block 'reference-encoders' disagrees")
    assert f"{float(oracle):.2f} (" in problem and "bench docs --write" in problem
    # the command says the same and exits 1; a document without that drift passes
    assert main(["docs", "--check", str(readme)]) == 1
    readme.write_text(replace_blocks(readme.read_text(), {"reference-encoders": table}))
    assert main(["docs", "--check", str(readme)]) == 0


def _card(name, steps, sha, init_from=None):
    data = {"steps": steps, **({"init_from": init_from} if init_from else {})}
    return {"name": name, "checkpoint_sha256": sha, "pretraining_data": data}


def test_lineage_adds_up_the_init_from_chain_by_hash():
    base = _card("base", 1500, "aaa")
    middle = _card("middle", 800, "bbb", {"checkpoint_sha256": "aaa", "steps": 1500, "encoder": "base"})
    top = _card("top", 300, "ccc", {"checkpoint_sha256": "bbb", "steps": 800, "encoder": "middle"})
    cards = [base, middle, top]
    assert lineage(top, cards).describe() == "2,600 (300 + 800 + 1,500 from init_from)"
    assert lineage(middle, cards).total_steps == 2300
    assert lineage(base, cards).describe() == "1,500"
    # a link whose hash no committed card has ends the chain, and says so
    orphan = _card("orphan", 500, "ddd", {"checkpoint_sha256": "zzz", "steps": 1000, "encoder": "lost"})
    assert lineage(orphan, cards).describe() == \
        "1,500 (500 + 1,000 from init_from; the last link's own card is not among those read: may go further)"


def _line(run, cpu, wall, tuning, **phases):
    return {"jobs": {"run": run}, "cpu_s": cpu, "wall_s": wall,
            "phases": {"fine-tuning": {"wall_s": tuning, "cpu_s": tuning}, **phases}}


def test_timing_tables_from_hand_made_lines(tmp_path, monkeypatch):
    import bench.doctables.cost as cost

    lines = [_line(2, 120.0, 180.0, 60.0, heads={"wall_s": 120.0, "cpu_s": 60.0}),
             _line(0, 6.0, 6.0, 0.0, heads={"wall_s": 6.0, "cpu_s": 6.0}),     # reused everything: not counted
             _line(1, 600.0, 600.0, 600.0, heads={"wall_s": 0.0, "cpu_s": 0.0})]
    (tmp_path / "timing.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    monkeypatch.setattr(cost, "PASSES", (("first", 1, 2),))
    src = Sources(tmp_path, timing="timing.jsonl")
    # first pass: one command ran 2 jobs, 180 s wall = 3.0 min, 120 s CPU = 2.0 min, 60 s tuning;
    # line 3 is past the described stretches; all lines: 2 commands, 3 jobs, 13.0 / 12.0 / 11.0 min
    assert passes_table(src).splitlines()[2:] == [
        "| first | 1-2 | 1 | 2 | 3.0 | 2.0 | 1.0 |",
        "| lines appended since (not yet described in bench/doctables/cost.py) | 3-3 | 1 | 1 | 10.0 | 10.0 | 10.0 |",
        "| all lines | 1-3 | 2 | 3 | 13.0 | 12.0 | 11.0 |"]
    # phases of the first pass: fine-tuning 60 s and heads 60 s CPU, 50 % each
    assert phases_table(src).splitlines()[2:4] == ["| fine-tuning | 1.0 | 1.0 | 50 % |", "| heads | 2.0 | 1.0 | 50 % |"]


def test_blocks_are_found_replaced_and_refused_when_broken():
    text = f"intro\n{opening('x')}\nold\n<!-- end generated -->\nend"
    (block,) = find_blocks(text)
    assert block.name == "x" and block.content == ("old",)
    assert replace_blocks(text, {"x": "| a |"}) == f"intro\n{opening('x')}\n\n| a |\n\n<!-- end generated -->\nend"
    with pytest.raises(MribenchError, match="doc.md:2: block 'x' has no"):
        find_blocks(f"intro\n{opening('x')}\nold", "doc.md")
    with pytest.raises(MribenchError, match="without an opening marker"):
        find_blocks("<!-- end generated -->")
