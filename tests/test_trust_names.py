"""Names are names, never paths; text is text (issue 32, items 2 and 3).

Each hostile record or bundle below is one an attacker could send: a cohort that is a path, an
encoder named like a reference or like markup, a symbolic link in a bundle, control characters
in free text. Each is refused with one line naming the offending value, or (free text) made inert
before it reaches a terminal, a page or a spreadsheet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_leaderboard import HEADLINE, class_record, entry, write_board

from bench.cli import main
from bench.leaderboard import load_board, render
from bench.leaderboard.board import build_board
from bench.leaderboard.entries import Entry, submission_problem
from bench.leaderboard.fmt import csv_cell
from bench.leaderboard.plots import file_stem
from bench.leaderboard.render_latex import SUBMITTED, render_latex
from bench.leaderboard.verify import verify_path
from bench.names import check_name, skeleton, strip_text, term
from bench.paths import splits_root

ESC = "\x1b"
ANSI = "\x1b[2J\x1b]0;pwned\x07"


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and text.strip() != ""


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """One verified record (a perfect ad_diagnosis linear probe of encoder ``plain``) in a results folder."""
    root = tmp_path_factory.mktemp("plain") / "results"
    return write_board(root, [class_record("plain", "ad_diagnosis", "perfect")])


def record_file(results: Path) -> Path:
    return next(p for p in results.rglob("*.json"))


def edited(plain: Path, out: Path, edit) -> Path:
    """A copy of the plain record (and its predictions file) under ``out`` with ``edit(json)`` applied."""
    src = record_file(plain)
    dst = out / src.relative_to(plain)
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    for sidecar in src.parent.glob("*.gz"):
        (dst.parent / sidecar.name).write_bytes(sidecar.read_bytes())
    return dst


def rename(name: str):
    def edit(data: dict) -> None:
        data["encoder"] = name
        data["provenance"]["encoder_card"]["name"] = name
    return edit


def set_cohort(name: str):
    def edit(data: dict) -> None:
        data["provenance"]["cohort"]["name"] = name
    return edit


# ------------------------------------------------------------------------------ names are names
def test_the_committed_names_are_names():
    for kind, name in [("encoder", "simclr3d@init"), ("encoder", "simclr_vit3d"), ("task", "ad_diagnosis"),
                       ("task", "adni/conversion"), ("task", "ucsf-pdgm/tumour_marker"), ("cohort", "synth-default"),
                       ("protocol", "cross_cohort"), ("encoder", "my-enc.v2+ft")]:
        assert check_name(kind, name) == name
    for kind, name in [("cohort", "/abs/splits/synth-default"), ("cohort", "synth-default/"), ("cohort", "./synth"),
                       ("cohort", "a..b"), ("task", "/ad_diagnosis"), ("task", "adni/"), ("task", "a//b"),
                       ("task", "../x"), ("encoder", "a b"), ("encoder", "a\tb"), ("encoder", "rаndom"),
                       ("encoder", "[/]"), ("encoder", ""), ("encoder", "x" * 65)]:
        with pytest.raises(ValueError, match="is not a name"):
            check_name(kind, name)


@pytest.mark.parametrize("cohort", ["/SPLITS/synth-smoke", "synth-smoke/", "./synth-smoke", "synth-smoke/../synth-smoke"])
def test_a_cohort_that_is_a_path_is_refused_in_one_line(plain, tmp_path, capsys, cohort):
    cohort = cohort.replace("/SPLITS", str(splits_root()))  # an absolute path to the real split folder
    path = edited(plain, tmp_path / "results", set_cohort(cohort))
    verdict = verify_path(path)
    assert not verdict.ok and "cohort name" in verdict.reason and "is not a name" in verdict.reason
    assert repr(cohort) in verdict.reason
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    refused = [line for line in out.splitlines() if "REFUSED" in line]
    assert len(refused) == 1 and "is not a name" in refused[0], out


def test_a_cohort_the_task_is_not_defined_on_is_refused(plain, tmp_path):
    verdict = verify_path(edited(plain, tmp_path / "results", set_cohort("adni")))
    assert verdict.reason.startswith("cohort 'adni' is not one task ad_diagnosis is defined on"), verdict.reason


def test_a_symlink_in_a_bundle_is_refused_in_one_line(plain, tmp_path):
    committed = Path("leaderboard/results/simclr3d/ad_diagnosis@v1/linear_probe.json").resolve()
    folder = tmp_path / "submissions" / "copied-v1" / "results" / "simclr3d" / "ad_diagnosis@v1"
    folder.mkdir(parents=True)
    os.symlink(committed, folder / "linear_probe.json")
    os.symlink(committed.with_name("linear_probe.predictions.json.gz"), folder / "linear_probe.predictions.json.gz")
    board = load_board(plain, submissions=tmp_path / "submissions", n_boot=200, power_sims=0)
    assert [e.encoder for e in board.entries] == ["plain"]
    (refused,) = board.refused
    assert refused.source == "copied-v1"
    assert refused.reason.startswith("holds a symbolic link ('results/simclr3d/ad_diagnosis@v1/linear_probe.json')") and one_line(refused.reason)


def test_a_symlinked_predictions_file_is_refused(plain, tmp_path):
    path = edited(plain, tmp_path / "results", lambda data: None)
    sidecar = next(path.parent.glob("*.gz"))
    real = tmp_path / "elsewhere.gz"
    sidecar.rename(real)
    os.symlink(real, sidecar)
    verdict = verify_path(path)
    assert "is a symbolic link or lies outside" in verdict.reason and one_line(verdict.reason)


def bundle(root: Path, name: str, records: list) -> Path:
    write_board(root / name / "results", records)
    return root


def test_a_random_finetune_submission_is_refused(plain, tmp_path, monkeypatch):
    monkeypatch.setitem(HEADLINE, "finetune", "full")
    card = {"supports_finetune": True}
    subs = bundle(tmp_path / "submissions", "rnd-v1",
                  [class_record("random", "ad_diagnosis", "perfect", protocol="finetune", card=card)])
    board = load_board(plain, submissions=subs, n_boot=200, power_sims=0)
    (refused,) = board.refused
    assert refused.reason == ("encoder 'random' is a reference encoder's name; a submission must give its encoder "
                              "a name of its own"), refused.reason


def test_a_finetune_record_whose_card_declines_finetuning_is_refused(plain, tmp_path, monkeypatch):
    monkeypatch.setitem(HEADLINE, "finetune", "full")
    results = write_board(tmp_path / "results", [class_record("octo", "ad_diagnosis", "perfect",
                                                               protocol="finetune")])
    verdict = verify_path(record_file(results))
    assert verdict.reason == ("encoder 'octo' is not fine-tuned (its card says supports_finetune False), yet this "
                              "is a finetune record"), verdict.reason


@pytest.mark.parametrize("name, why", [("rаndom", "is not a name"),            # Cyrillic а: the schema
                                       ("Rand0m", "looks like the reference encoder 'random'"),
                                       ("simclr3d_init", "looks like the reference encoder 'simclr3d@init'"),
                                       ("SIMCLR3D", "looks like the reference encoder 'simclr3d'")])
def test_a_homoglyph_of_a_reference_is_refused(plain, tmp_path, name, why):
    subs = tmp_path / "submissions"
    edited(plain, subs / "look-alike" / "results", rename(name))
    board = load_board(plain, submissions=subs, n_boot=200, power_sims=0)
    (refused,) = board.refused
    assert why in refused.reason and one_line(refused.reason), refused.reason


def test_confusables_fold_to_one_skeleton():
    assert skeleton("rаndom") == skeleton("random") == skeleton("RANDOM") == skeleton("rand0m")
    assert skeleton("ｒａｎｄｏｍ") == skeleton("random")  # full-width: NFKC
    assert submission_problem("octants", {"random", "simclr3d"}) is None
    assert submission_problem("randomised", {"random"}) is None


def test_plot_names_never_collide():
    names = ["synth-a+b", "synth-a-b", "synth-a@b", "adni/conversion", "adni-conversion"]
    stems = {file_stem(f"label_efficiency-{n}") for n in names}
    assert len(stems) == len(names)
    assert file_stem("label_efficiency-ad_diagnosis") == "label_efficiency-ad_diagnosis"  # committed names kept


def test_latex_marks_submitted_rows():
    ours = entry(class_record("plain", "ad_diagnosis", "perfect"))
    theirs = Entry(class_record("octo", "ad_diagnosis", "inverted"), "octo-v1/results/x.json", "octo-v1")
    tex = render_latex(build_board([ours, theirs], n_boot=200, power_sims=0), "ad_diagnosis")
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    assert f"octo{SUBMITTED}" in rows and "plain" in rows
    assert "submitted in a bench submit bundle (octo-v1)" in tex


# ------------------------------------------------------------------------------- text is text
@pytest.mark.parametrize("name", ["[/]", f"evil{ANSI}", "[click]"])
def test_a_markup_or_ansi_encoder_name_is_one_refusal_shown_as_text(plain, tmp_path, capfd, name):
    results = tmp_path / "results"
    shutil_copy(plain, results)
    edited(plain, tmp_path / "hostile", rename(name))
    out = tmp_path / "board"
    code = main(["leaderboard", "--results", str(results), "--results", str(tmp_path / "hostile"), "--out", str(out),
                 "--n-boot", "200", "--power-sims", "0", "--format", "csv"])
    printed = capfd.readouterr()
    assert code == 0, printed.err
    assert ESC not in printed.out + printed.err and "\x07" not in printed.out + printed.err
    refused = [line for line in printed.err.splitlines() if "refused" in line]
    assert len(refused) == 1 and "is not a name" in refused[0], printed.err
    assert repr(name).replace(ESC, "").split("\\")[0].strip("'") in refused[0]  # '[/]', '[click]' shown
    assert ESC not in (out / "results.csv").read_text()


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_ansi_in_free_text_is_stripped_before_any_output(tmp_path, capfd):
    card = {"architecture": f"net{ANSI}", "reference": "see\x1b[31m red\nline\u202e"}
    results = write_board(tmp_path / "results", [class_record("plain", "ad_diagnosis", "perfect", card=card),
                                                 class_record("other", "ad_diagnosis", "inverted",
                                                              flags=[f"note{ANSI}"])])
    board = load_board(results, n_boot=200, power_sims=0)
    assert len(board.entries) == 2, board.refused
    card = board.entries[0].record.provenance.encoder_card
    assert card["architecture"] == "net" and card["reference"] == "see red line"
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--n-boot", "200",
                 "--power-sims", "0"]) == 0
    printed = capfd.readouterr()
    assert ESC not in printed.out + printed.err
    for name in ("results.csv", "index.html", "README.md"):
        assert ESC not in (out / name).read_text() and "\x07" not in (out / name).read_text(), name


def test_term_escapes_markup_and_strips_controls():
    assert term("[/]") == "\\[/]" and term("[click]") == "\\[click]"
    assert strip_text(f"a{ANSI}b\tc\u200bd") == "ab cd"


def test_an_error_quoting_markup_prints_as_text(tmp_path, capsys):
    missing = tmp_path / "[/]"
    assert main(["verify", str(missing)]) == 2
    assert "[/]" in capsys.readouterr().err


@pytest.mark.parametrize("value", [" =1+1", "＝1+1", "＋1", "－1", "＠SUM(A1)", "=1+1"])
def test_the_csv_guard_covers_spaces_and_full_width_starters(value):
    assert csv_cell(value) == "'" + value


def test_a_plain_submission_still_reaches_the_board(plain, tmp_path):
    subs = tmp_path / "submissions"
    edited(plain, subs / "octo-v1" / "results", rename("octo"))
    board = load_board(plain, submissions=subs, n_boot=200, power_sims=0)
    assert sorted(e.encoder for e in board.entries) == ["octo", "plain"] and not board.refused


@pytest.mark.parametrize("inline", [False, True])
def test_prediction_ids_lose_their_control_characters_at_read(tmp_path, inline):
    from bench.results import load_record, write_record

    record = class_record("plain", "ad_diagnosis", "perfect")
    rows = [dict(p, example_id=p["example_id"] + ANSI) for p in record.predictions]
    path = write_record(record.model_copy(update={"predictions": rows}), tmp_path / "r.json",
                        inline_predictions=inline)
    loaded = load_record(path)
    assert [p["example_id"] for p in loaded.predictions] == [p["example_id"] for p in record.predictions]
