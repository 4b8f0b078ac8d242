"""What ``bench run`` prints (issue 31): the headline whole at 80 columns, ``reused (<record>)``,
the result against its floors by the board's test, plain progress lines off a terminal, our own
warnings as one-line notes, and no FutureWarning from our MONAI calls."""

from __future__ import annotations

import io
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from bench.commands import _floors, _report
from bench.paths import repo_root
from bench.runner import SKIPPED, JobResult

RESULTS = repo_root() / "leaderboard" / "results"
RECORD = RESULTS / "simclr3d" / "conversion@v1" / "linear_probe.json"


def result(path: Path = RECORD, status: str = SKIPPED) -> JobResult:
    return JobResult("simclr3d", "conversion", "linear_probe", path, status, main_score=0.614,
                     ci=(0.512, 0.7138), key="simclr3d/conversion@v1/linear_probe")


def test_the_headline_is_whole_at_80_columns_and_a_reused_job_names_its_record(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(_report, "console", Console(file=out, width=80))
    _report.print_rows("bench run: simclr3d on synth-default", _report.result_rows([result()]))
    text = out.getvalue()
    assert "0.614 (0.512-0.714)" in text and "…" not in text
    assert f"reused ({RECORD})" in text and "skipped" not in text
    out.truncate(0)
    monkeypatch.setattr(_report, "console", Console(file=out, width=400))
    _report.print_rows("t", _report.result_rows([result()]))
    assert "┃ encoder" in out.getvalue() and "0.614 (0.512-0.714)" in out.getvalue()  # a table where it fits


@pytest.mark.skipif(not RECORD.is_file(), reason="the committed board is not in this checkout")
def test_a_result_is_compared_with_its_floors_by_the_boards_test():
    from bench.leaderboard.entries import Entry
    from bench.leaderboard.ranking import compare
    from bench.leaderboard.verify import verify_path

    lines = _floors.floor_lines([result()], RESULTS)
    assert len(lines) == 1
    line = lines[0]
    assert re.search(r"vs random: [+-]\d\.\d{3}, p [=<] [\d.]+ \((not )?separated\)", line), line
    assert "vs simclr3d@init: " in line
    entry, floor = (Entry(verify_path(p).record, str(p)) for p in (RECORD, RESULTS / "random" / RECORD.relative_to(
        RESULTS / "simclr3d")))
    assert _floors.verdict(compare(entry, floor)) in line  # the same numbers as the board's test


@pytest.mark.skipif(not RECORD.is_file(), reason="the committed board is not in this checkout")
def test_a_missing_floor_record_is_one_line_with_the_command_that_makes_it(tmp_path):
    here = tmp_path / "simclr3d" / "conversion@v1"
    here.mkdir(parents=True)
    for f in RECORD.parent.glob("linear_probe.*"):
        shutil.copy(f, here / f.name)
    lines = _floors.floor_lines([result(here / RECORD.name)], tmp_path)
    assert len(lines) == 1 and "no floor record for random (no record: " in lines[0]
    assert lines[0].endswith("to add: bench run --encoder random --encoder simclr3d@init --task conversion "
                             "--protocol linear_probe")


def test_floors_never_include_the_encoder_itself():
    known = {"simclr3d", "simclr3d@init", "random", "intensity"}
    assert _floors.floor_names("simclr3d", known) == ["random", "simclr3d@init"]
    assert _floors.floor_names("simclr3d@init", known) == ["random"]
    assert _floors.floor_names("intensity", known) == ["random"]
    assert _floors.floor_names("random", known) == []


def test_our_warnings_are_one_line_notes_once_and_library_warnings_pass_through(capsys):
    import bench.splits
    from bench.cli import _one_line_warnings

    passed = []
    show = _one_line_warnings(lambda *a: passed.append(a))
    message = UserWarning("ad_diagnosis: class np.int64(2) has 9 train subject(s) in ad.tsv, fewer than k=16")
    for _ in range(2):
        show(message, UserWarning, bench.splits.__file__, 378)
    show(FutureWarning("deprecated"), FutureWarning, np.__file__, 1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["note: ad_diagnosis: class 2 has 9 train subject(s) in ad.tsv, fewer than k=16"]
    assert len(passed) == 1 and passed[0][1] is FutureWarning


def test_hd95_is_monais_and_raises_no_future_warning():
    import torch
    from monai.metrics import compute_hausdorff_distance

    from bench.metrics import hd95_per_subject

    rng = np.random.default_rng(0)
    truth, pred = rng.random((3, 12, 12, 10)) > 0.8, rng.random((3, 12, 12, 10)) > 0.85
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ours = hd95_per_subject(truth, pred, spacing=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [float(compute_hausdorff_distance(torch.from_numpy(p[None, None].astype(np.float32)),
                                                   torch.from_numpy(t[None, None].astype(np.float32)),
                                                   percentile=95, spacing=2.0).item()) for t, p in zip(truth, pred)]
    assert ours.tolist() == theirs


def test_progress_off_a_terminal_is_plain_lines_even_while_a_step_is_slow(capsys):
    from bench.progress import progress_bar

    with progress_bar(True, every=0.05) as bar:  # pytest's stderr is not a terminal
        task = bar.add_task("embedding with x", total=4)
        bar.advance(task, 2)
        time.sleep(0.2)  # a slow step: the timer still reports
        bar.update(task, advance=2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[progress] embedding with x: 0/4, 0:00:00 elapsed"
    assert any(re.fullmatch(r"\[progress\] embedding with x: 2/4, 0:00:00 elapsed, ETA 0:00:00", l) for l in lines)
    assert lines[-1].startswith("[progress] embedding with x: 4/4") and len(lines) >= 4
    with progress_bar(False) as bar:  # --no-progress: silent
        bar.advance(bar.add_task("x", total=1))
    assert capsys.readouterr().err == ""
