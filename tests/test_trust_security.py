"""Trust (issue 19, items 1-5): checkpoints never run code, caches bind what really computed the
embeddings, renderers escape what records say, crafted records cannot crash a command, and a
record is only ever the result of the run that asks for it."""

from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
import torch

from bench.cli import main
from bench.encoders import get_encoder
from bench.errors import MribenchError
from bench.paths import repo_root

TASK = "tumour_marker"  # the tiny cohort's quickest probe task (few scans)


class Evil:
    """Unpickling this calls ``open(marker, "w")``: any code could run in its place."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


@pytest.fixture
def tiny_env(tiny_splits_root, monkeypatch):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))


def run_args(cohort: Path, results: Path, *, encoder: str = "oracle", profile: str = "smoke",
             seeds: str = "1") -> list[str]:
    return ["run", "--encoder", encoder, "--task", TASK, "--cohort", str(cohort), "--profile", profile,
            "--seeds", seeds, "--results", str(results), "--no-progress"]


# ------------------------------------------------------------------------ 1. checkpoints run no code
@pytest.mark.parametrize("name, layout", [("simclr3d", "model_state_dict"), ("simclr_vit3d", "state_dict")])
def test_malicious_weights_are_refused_without_running(tmp_path, name, layout):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    torch.save({layout: Evil(marker)}, weights)
    with pytest.raises(MribenchError, match="refused") as caught:
        get_encoder(name, weights=weights)
    assert not marker.exists()
    assert str(weights) in one_line(caught.value) and "io.open" in str(caught.value)


def test_malicious_resume_checkpoint_is_refused_without_running(tiny_cohort_dir, tiny_env, tmp_path):
    from baselines.simclr3d import SimCLRMethod
    from bench.data.sources import open_cohort
    from bench.pretrain import pretrain

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"step": 1, "network": Evil(marker)}, out / "last.pt")
    with pytest.raises(MribenchError, match="refused") as caught:
        pretrain(SimCLRMethod("small"), open_cohort(tiny_cohort_dir, progress=False), steps=2, batch_size=2,
                 out_dir=out, resume=True, progress=False)
    assert not marker.exists() and "last.pt" in one_line(caught.value)


def test_resume_from_the_safe_checkpoint_format_is_exact(tiny_cohort_dir, tiny_env, tmp_path):
    """last.pt holds tensors and plain containers only, and resuming from it ends where one run does."""
    from baselines.simclr3d import SimCLRMethod
    from bench.data.sources import open_cohort
    from bench.pretrain import pretrain, read_pretrain_state

    cohort = open_cohort(tiny_cohort_dir, progress=False)
    kw = dict(batch_size=2, checkpoint_every=2, progress=False)
    whole = pretrain(SimCLRMethod("small"), cohort, steps=4, out_dir=tmp_path / "whole", **kw)
    from tests.test_pretrain import interrupted_after_checkpoint

    interrupted_after_checkpoint(tmp_path / "part", 2, lambda: pretrain(SimCLRMethod("small"), cohort, steps=4,
                                                                        out_dir=tmp_path / "part", **kw))
    raw = torch.load(tmp_path / "part" / "last.pt", map_location="cpu", weights_only=True)  # no unsafe global
    assert json.loads(raw["meta"])["step"] == 2 and raw["torch_rng"].dtype == torch.uint8
    resumed = pretrain(SimCLRMethod("small"), cohort, steps=4, out_dir=tmp_path / "part", resume=True, **kw)
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    assert read_pretrain_state(tmp_path / "part" / "last.pt")["step"] == 4


def _torch_load_calls(path: Path) -> list[tuple[int, bool]]:
    """(line, has weights_only=True) of every ``torch.load(...)`` / ``load(...)`` imported from torch."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module in ("torch", "torch.serialization") for a in node.names if a.name == "load"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        named = (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, (ast.Name, ast.Attribute))
                 and ast.unparse(f.value) in ("torch", "torch.serialization"))
        if named or (isinstance(f, ast.Name) and f.id in aliases):
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            calls.append((node.lineno, safe))
    return calls


def test_every_torch_load_in_the_project_is_weights_only():
    root = repo_root()
    unsafe, seen = [], 0
    for folder in ("bench", "baselines", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for line, safe in _torch_load_calls(path):
                seen += 1
                if not safe:
                    unsafe.append(f"{path.relative_to(root)}:{line}")
            assert "pickle.load(" not in path.read_text(encoding="utf-8"), path
    assert seen >= 1 and not unsafe, f"torch.load without weights_only=True: {unsafe}"


@pytest.mark.parametrize("name", ["mae3d", "dino2d", "temporal"])
def test_a_bad_weights_file_is_one_line(tmp_path, name, capsys):
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(MribenchError) as caught:
        get_encoder(name, weights=bad)
    assert str(bad) in one_line(caught.value)


# ------------------------------------------------------------- 2. the embedding cache binds the truth
POISON = """
import torch
from bench.encoders import Encoder, get_encoder

class Poison(Encoder):
    '''Claims simclr3d's card, checkpoint hash and all, under another name; returns zeros.'''
    def __init__(self):
        self.card = get_encoder("simclr3d").card.model_copy(update={"name": "not-simclr3d"})

    def checkpoint_hash(self):
        return self.card.checkpoint_sha256

    def embed(self, volumes):
        return torch.zeros(len(volumes), self.card.embed_dim)
"""

VERSIONED = """
import torch
from bench.encoders import Encoder, EncoderCard

class Versioned(Encoder):
    def __init__(self):
        self.card = EncoderCard(name="versioned", architecture="constant", n_parameters=0, embed_dim=3,
                                input_space="cpu-small", ssl_method="none")

    def embed(self, volumes):
        return {body}
"""


@pytest.fixture
def cache_setup(tiny_cohort_dir, tmp_path):
    from bench.data.sources import open_cohort
    from bench.data.store import VolumeStore
    from bench.embeddings import EmbeddingCache

    cohort = open_cohort(tiny_cohort_dir, progress=False)
    rows = np.flatnonzero((cohort.table["sequence"] == "T1w").to_numpy())[:3]
    return cohort, rows, VolumeStore(Path(os.environ["MRIBENCH_CACHE"]) / "store"), EmbeddingCache(tmp_path / "emb")


def test_a_poisoned_cache_entry_is_never_served(cache_setup, tmp_path):
    cohort, rows, store, cache = cache_setup
    (tmp_path / "poison.py").write_text(POISON)
    poison = get_encoder(f"{tmp_path / 'poison.py'}:Poison")
    assert all(not v.any() for v in cache.embed(poison, cohort, rows, store, progress=False).values())
    real = get_encoder("simclr3d")
    before = cache.computed
    got = cache.embed(real, cohort, rows, store, progress=False)
    assert cache.computed == before + len(rows)  # a miss: the zeros are not simclr3d's
    assert all(v.any() for v in got.values())


def test_changed_encoder_code_misses_and_unchanged_code_hits(cache_setup, tmp_path):
    cohort, rows, store, cache = cache_setup
    path = tmp_path / "versioned.py"
    path.write_text(VERSIONED.format(body="torch.ones(len(volumes), 3)"))
    first = cache.embed(get_encoder(f"{path}:Versioned"), cohort, rows, store, progress=False)
    assert all((v == 1).all() for v in first.values())
    path.write_text(VERSIONED.format(body="torch.full((len(volumes), 3), 2.0)  # edited"))
    edited = cache.embed(get_encoder(f"{path}:Versioned"), cohort, rows, store, progress=False)
    assert all((v == 2).all() for v in edited.values())  # not the stale ones
    computed = cache.computed
    again = cache.embed(get_encoder(f"{path}:Versioned"), cohort, rows, store, progress=False)
    assert cache.computed == computed and all((v == 2).all() for v in again.values())  # unchanged: a hit
    # a built-in encoder built twice keeps its key (its weights hashed once per object)
    from bench.embeddings import encoder_key

    a, b = get_encoder("random"), get_encoder("random")
    assert encoder_key(a) == encoder_key(b) == encoder_key(a)
    with torch.no_grad():
        b.module().net.conv1.weight.add_(1.0)
    assert encoder_key(get_encoder("random")) == encoder_key(a)
    c = get_encoder("random")
    with torch.no_grad():
        c.module().net.conv1.weight.add_(1.0)
    assert encoder_key(c) != encoder_key(a)  # other weights, another key


# ------------------------------------------------------------------------- 3. renderers escape records
HOSTILE = "A|B\n`code`<script>alert(1)</script>[link](http://evil.example) ![img](http://evil.example/i.png)"
FORMULA = '=HYPERLINK("http://evil.example","click")'


def test_a_hostile_card_cannot_inject_markdown_html_or_formulas(tmp_path):
    """Names are names (issue 32): a hostile encoder name is refused at the schema, in one line; the
    card's free text and the record's path still reach the renderers, escaped."""
    from test_leaderboard import class_record, write_board

    from bench.leaderboard import load_board, render
    from bench.results import write_record

    for name in (HOSTILE, FORMULA):
        with pytest.raises(ValidationError, match="is not a name"):
            class_record(name, "ad_diagnosis", "perfect")
    results = write_board(tmp_path / "results", [
        class_record("hostile", "ad_diagnosis", "perfect", card={"architecture": HOSTILE}),
        class_record("plain", "ad_diagnosis", "perfect")])
    write_record(class_record("formula", "ad_diagnosis", "inverted"), results / "=1+1" / "linear_probe.json")
    board = load_board(results, n_boot=200)
    assert len(board.entries) == 3, board.refused
    out = tmp_path / "board"
    render(board, out, ("markdown", "csv", "html"))

    md = (out / "README.md").read_text()
    for raw in ("<script", "[link](", "![img](", "`code`", "http://evil"):  # no HTML, link, image, code span
        assert raw not in md, raw
    tables, block = [], []
    for line in md.splitlines() + [""]:  # consecutive "| ... |" lines are one table
        if line.startswith("|"):
            block.append(line)
        elif block:
            tables, block = tables + [block], []
    hostile = [t for t in tables if any("A\\|B" in line for line in t)]
    assert len(hostile) == 1  # the encoder cards
    for table in hostile:  # every row of a table has its header's columns: the text opened none
        assert len({line.replace("\\|", "").count("|") for line in table}) == 1, table
    assert "&lt;script&gt;" in md and "\\[link\\]" in md  # shown, as text

    rows = list(csv.DictReader((out / "results.csv").open(newline="")))
    by_encoder = {r["encoder"]: r for r in rows}
    assert by_encoder["formula"]["record"] == "'=1+1/linear_probe.json"  # a path from the folder: guarded
    assert all(not r[k].startswith(("=", "+", "-", "@")) for r in rows for k in r)
    assert float(by_encoder["plain"]["main_score"]) == pytest.approx(1.0)  # numbers stay numbers

    page = (out / "index.html").read_text()
    assert "<script>alert(1)" not in page


# --------------------------------------------------------------------- 4. crafted records are refused
def _nested(path: Path, size: int = 400_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[" * (size // 2) + "]" * (size // 2))
    return path


def test_a_deeply_nested_record_is_one_line_for_verify_leaderboard_and_status(tmp_path, capsys):
    from test_leaderboard import class_record, write_board

    from bench.commands.status import collect_status
    from bench.results import load_record

    results = write_board(tmp_path / "results", [class_record("good", "ad_diagnosis", "perfect")])
    (good,) = results.rglob("*.json")
    bad = _nested(results / "bad" / good.parent.name / "linear_probe.json")
    with pytest.raises(MribenchError, match="nested 200000 deep") as caught:
        load_record(bad)
    assert str(bad) in one_line(caught.value)

    assert main(["verify", str(bad)]) == 1  # refused, not crashed
    assert "REFUSED" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "board"), "--format",
                 "markdown", "--n-boot", "200"]) == 0
    assert "refused bad/" in capsys.readouterr().err  # skipped; the good record is on the board
    # a crafted failure marker is ignored too
    _nested(results / ".jobs" / "good" / good.parent.name / "fractions.failed")
    states = {(j.encoder, j.protocol): j for j in collect_status(results)}
    assert states[("bad", "linear_probe")].state == "invalid"
    assert "nested" in states[("bad", "linear_probe")].detail and "\n" not in states[("bad", "linear_probe")].detail
    assert states[("good", "linear_probe")].state == "done" and states[("good", "fractions")].state == "missing"
    assert main(["status", "--results", str(results)]) == 1


def test_run_redoes_a_job_whose_record_is_crafted(tiny_cohort_dir, tiny_env, tmp_path):
    from bench.results import load_record

    results = tmp_path / "results"
    assert main(run_args(tiny_cohort_dir, results)) == 0
    (record,) = results.rglob("*.json")
    _nested(record)
    assert main(run_args(tiny_cohort_dir, results)) == 0
    assert load_record(record).encoder == "oracle"


# ----------------------------------------------------------------- 5. a record is its own run's result
def test_a_rerun_with_other_settings_refuses_and_the_same_one_skips(tiny_cohort_dir, tiny_env, tmp_path, capsys):
    from bench.commands.status import collect_status

    results = tmp_path / "results"
    assert main(run_args(tiny_cohort_dir, results)) == 0
    capsys.readouterr()
    assert main(run_args(tiny_cohort_dir, results)) == 0  # same settings: skipped, as before
    assert "reused (" in capsys.readouterr().out
    for profile, seeds, field in (("smoke", "2", "seeds [0] -> [0,1]"), ("default", "1", "profile smoke -> default")):
        assert main(run_args(tiny_cohort_dir, results, profile=profile, seeds=seeds)) == 2
        err = capsys.readouterr().err
        assert field in err and "--overwrite" in err and "--results" in err and "reused" not in err, err
    # --overwrite replaces it; status still sees every job done
    assert main([*run_args(tiny_cohort_dir, results, seeds="2"), "--overwrite"]) == 0
    assert [j.state for j in collect_status(results)] == ["done"]


def test_other_weights_refuse_and_the_cohort_hash_binds_the_table(tiny_cohort_dir, tiny_env, tmp_path, capsys):
    from baselines.recipe import WEIGHTS_DIR
    from bench.data.sources import open_cohort
    from bench.runner import cohort_sha256

    results = tmp_path / "results"
    assert main(run_args(tiny_cohort_dir, results, encoder="simclr3d")) == 0
    state = torch.load(WEIGHTS_DIR / "simclr3d-small.pt", map_location="cpu", weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    capsys.readouterr()
    assert main([*run_args(tiny_cohort_dir, results, encoder="simclr3d"), "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert "weights " in err and "holds the result of another run" in err

    cohort = open_cohort(tiny_cohort_dir, progress=False)
    again = open_cohort(tiny_cohort_dir, progress=False)
    assert cohort_sha256(cohort) == cohort_sha256(again)
    again.table.loc[0, "age"] = again.table.loc[0, "age"] + 1
    again._mribench_sha256 = None
    assert cohort_sha256(again) != cohort_sha256(cohort)


BUILTIN_NAME = """
import torch
from bench.encoders import Encoder, EncoderCard

class Impostor(Encoder):
    def __init__(self):
        self.card = EncoderCard(name="{name}", architecture="zeros", n_parameters=0, embed_dim=2,
                                input_space="cpu-small", ssl_method="none")

    def embed(self, volumes):
        return torch.zeros(len(volumes), 2)
"""


@pytest.mark.parametrize("name", ["random", "Random", "simclr3d"])
def test_a_file_encoder_cannot_take_a_builtin_name(tmp_path, name):
    path = tmp_path / "impostor.py"
    path.write_text(BUILTIN_NAME.format(name=name))
    with pytest.raises(MribenchError, match="reserved") as caught:
        get_encoder(f"{path}:Impostor")
    assert str(path) in one_line(caught.value)
    path.write_text(BUILTIN_NAME.format(name="my-encoder"))
    assert get_encoder(f"{path}:Impostor").card.name == "my-encoder"
