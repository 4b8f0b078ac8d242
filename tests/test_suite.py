"""Suites (``suites/*.yaml``, ``bench suite run``): validation, the plan's skips and limits, the
smoke suite reproducing its committed records, and the time by phase a run reports.

``tests/data/smoke_suite.json.gz`` holds the canonical records (main score, per-seed scores with
CIs, summary, predictions) of ``bench suite run smoke --profile smoke --seeds 1``, taken with::

    python tests/test_suite.py --write tests/data/smoke_suite.json.gz

A fresh run must give them again, on any x86-64 CPU: numbers within what another CPU's kernels
explain, everything else exactly (:func:`reference_grid.record_differences`, where the tolerances are
derived): the guarantee the committed default board rests on, checked on the suite a test can afford.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.data.synth.latents import EXTERNAL_SITE
from bench.errors import MribenchError
from bench.results import read_record_json
from bench.suite import job_options, load_suite, plan, restrict, suite_jobs


@pytest.fixture(scope="module")
def default_plan():
    """The default suite planned on the default cohort (builds every encoder once: slow)."""
    suite = load_suite("default")
    return suite, plan(suite, "synth-default")


def test_default_suite_plans_every_applicable_combination(default_plan):
    suite, planned = default_plan
    jobs = set(planned.jobs)
    # from-scratch training only under fine-tuning, and fine-tuning only on the headline tasks
    assert {p for e, _, p in jobs if e == "supervised"} == {"finetune"}
    assert {t for _, t, p in jobs if p == "finetune"} == {"ad_diagnosis", "brain_age", "conversion"}
    # `random` fine-tuned would be `supervised` again (same seeded ResNet-10, same protocol)
    assert ("supervised", "conversion", "finetune") in jobs and ("random", "conversion", "finetune") not in jobs
    assert ("simclr3d@init", "conversion", "finetune") in jobs
    # the 2-core budget: robustness on the headline tasks, no label-efficiency decoders for segmentation
    assert {t for _, t, p in jobs if p == "robustness"} == {"ad_diagnosis", "brain_age"}
    assert ("random", "tumour_segmentation", "linear_probe") in jobs
    assert ("random", "tumour_segmentation", "fractions") not in jobs
    assert ("simclr3d@init", "conversion", "linear_probe") in jobs and ("oracle", "ad_diagnosis", "fractions") in jobs
    # what cannot apply is skipped with the protocol's own reason, not run
    reasons = {(e, t, p): r for e, t, p, r in planned.skipped}
    assert reasons[("random", "brain_age", "few_shot")] == "few-shot needs class labels; brain_age is regression"
    assert ("random", "brain_age", "few_shot") not in jobs
    assert not jobs & set(reasons)


@pytest.mark.parametrize("text, message", [
    ("name: x\nencoders: [random]\nprotocols: [no_such]\n", "unknown protocol(s) or task(s): no_such"),
    ("name: x\nencoders: [random]\nprotocols: [linear_probe]\ntasks: [nope]\n", "unknown protocol(s) or task(s): nope"),
    ("name: x\nencoders: [random]\nprotocols: [linear_probe]\nsurprise: 1\n", "not a valid suite"),
    ("name: [unclosed\n", "not a valid suite"),
    ("name: x\nencoders: [random]\nprotocols: [cross_cohort]\noptions: {cross_cohort: {test_sites: S4}}\n",
     "unknown option(s) test_sites of protocol cross_cohort; it takes test_cohort, test_task, train_site, test_site"),
    ("name: x\nencoders: [random]\nprotocols: [linear_probe]\noptions: {linear_probe: {test_site: S4}}\n",
     "unknown option(s) test_site of protocol linear_probe; it takes none"),
    ("name: x\nencoders: [random]\nprotocols: [cross_cohort]\n", "protocol cross_cohort runs with options"),
    ("name: x\nencoders: [random]\nprotocols: [cross_cohort]\noptions: {cross_cohort: {test_task: nope}}\n",
     "unknown protocol(s) or task(s): nope"),
    ("name: x\nencoders: [random]\nprotocols: [cross_cohort]\noptions: {cross_cohort: {test_site: [S4]}}\n",
     "not a valid suite"),
])
def test_a_bad_suite_file_is_one_line_naming_it(tmp_path, text, message, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(MribenchError, match="mine.yaml"):
        load_suite(str(path))
    assert main(["suite", "run", str(path), "--profile", "smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in " ".join(err.split()) and len(err.splitlines()) == 1


def _canonical(folder):
    """Scores, CIs, summaries and predictions of every record (no timestamps, wall times, command)."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        r = read_record_json(path)
        out[str(path.relative_to(folder))] = {k: r[k] for k in ("main_score", "scores", "summary", "predictions")}
    return out


#: re-taken at commit 0dbdc89 on an AVX2-only CPU (AMD EPYC): six of its records differed from
#: the first take's by float noise (1e-6) that the CPU's BLAS kernels decide; since then compared
#: within that noise, so no CPU needs its own take
SMOKE_FIXTURE = Path(__file__).parent / "data" / "smoke_suite.json.gz"
SMOKE_ARGS = ["suite", "run", "smoke", "--profile", "smoke", "--seeds", "1", "--no-progress"]


@pytest.mark.slow
def test_smoke_suite_reproduces_its_committed_records(tmp_path, capsys):
    from reference_grid import record_differences

    assert main([*SMOKE_ARGS, "--results", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "suite smoke on synth-smoke: 12 job(s), 0 skipped" in " ".join(printed.split())
    got = _canonical(tmp_path / "a")
    committed = json.loads(gzip.decompress(SMOKE_FIXTURE.read_bytes()))
    assert len(got) == 12 and all(v["main_score"] is not None for v in got.values())
    assert sorted(got) == sorted(committed)
    problems = [f"{key}{d}" for key in committed for d in record_differences(key, committed[key], got[key])]
    assert not problems, "\n".join(problems[:20])
    assert main(["verify", str(tmp_path / "a")]) == 0


def test_a_slice_of_a_suite_plans_only_the_named_encoders_tasks_and_protocols():
    suite = load_suite("default")
    part = restrict(suite, encoders=["volumes", "oracle"], tasks=["ad_diagnosis", "brain_age"],
                    protocols=["linear_probe", "few_shot"])
    planned = plan(part, "synth-default-seed0-2mm")
    assert sorted(planned.jobs) == [(e, t, p) for e in ("oracle", "volumes") for t, p in (
        ("ad_diagnosis", "few_shot"), ("ad_diagnosis", "linear_probe"), ("brain_age", "linear_probe"))]
    assert [s[:3] for s in planned.skipped] == [("volumes", "brain_age", "few_shot"), ("oracle", "brain_age", "few_shot")]
    assert restrict(suite) == suite
    with pytest.raises(MribenchError, match="suite default has no encoder nope; it declares random, "):
        restrict(suite, encoders=["nope"])
    with pytest.raises(MribenchError, match="suite default has no protocol segmentation"):
        restrict(suite, protocols=["segmentation"])


class _GridOnly:
    """Stands in for a Runner in suite_jobs: its jobs() without building encoders (names are card names)."""

    def jobs(self, encoders, tasks, protocols, encoder_kwargs=None, options=None):
        from bench.jobs import expand_grid
        from bench.protocols import check_protocols
        from bench.tasks import get_task

        check_protocols(protocols, options)
        return expand_grid([(e, e, {}) for e in encoders], [get_task(t) for t in tasks], protocols, options,
                           cohort_name="synth-default")


def test_default_suite_declares_the_held_out_site_transfer(default_plan):
    """cross_cohort on ad_diagnosis and brain_age for every encoder with a probe, from the sites with train
    subjects to S4 (which the split files hold out whole), on the cohort the suite runs on."""
    suite, planned = default_plan
    cross = sorted((e, t) for e, t, p in planned.jobs if p == "cross_cohort")
    probed = sorted((e, t) for e, t, p in planned.jobs if p == "linear_probe" and t in ("ad_diagnosis", "brain_age"))
    assert cross == probed and len(cross) == 2 * (len(suite.encoders) - 1)          # all but supervised
    assert ("supervised", "brain_age", "cross_cohort") in {s[:3] for s in planned.skipped}
    options = job_options(suite, "synth-default")
    assert options == {"cross_cohort": {"train_site": "S1+S2+S3", "test_site": "S4", "test_cohort": "synth-default"}}
    part = plan(restrict(suite, encoders=["volumes"], tasks=["brain_age", "conversion"]), "synth-default")
    jobs = suite_jobs(_GridOnly(), part, options)
    assert [(j.encoder, j.task, j.protocol) for j in jobs] == part.jobs                # in plan order
    transfer = next(j for j in jobs if j.protocol == "cross_cohort")
    assert transfer.task == "brain_age" and dict(transfer.options) == options["cross_cohort"]
    assert transfer.key == "volumes/brain_age@v2/cross_cohort-synth-default-S1-S2-S3-to-synth-default-S4"
    assert all(j.options == () and j.stem == "" for j in jobs if j.protocol != "cross_cohort")
    # the site the synthetic split files hold out whole (bench splits make) is the suite's test site
    assert EXTERNAL_SITE == options["cross_cohort"]["test_site"]


def test_dry_run_lists_the_transfer_jobs_with_their_options(tmp_path, capsys, tiny_cohort_dir):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nencoders: [volumes]\ntasks: [brain_age, conversion]\n"
                    "protocols: [linear_probe, cross_cohort]\nonly: {cross_cohort: {tasks: [brain_age]}}\n"
                    "options: {cross_cohort: {train_site: S1+S2+S3, test_site: S4}}\n")
    assert main(["suite", "run", str(path), "--cohort", str(tiny_cohort_dir), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "suite mine on tiny: 3 job(s), 0 skipped" in out
    assert "job  volumes / brain_age / cross_cohort (test_cohort=tiny, test_site=S4, train_site=S1+S2+S3)" in out
    assert "job  volumes / conversion / linear_probe\n" in out


@pytest.mark.slow
def test_a_suite_run_reports_its_time_by_phase(tiny_cohort_dir, tiny_splits_root, tmp_path, monkeypatch, capsys):
    """One job of the smoke suite on the tiny cohort, then again with its record reused: each run
    prints the time by phase and appends it to the results folder's state as one JSON line."""
    from bench.commands.suite import timing_path
    from bench.timing import PHASES

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    results = tmp_path / "results"
    args = ["suite", "run", "smoke", "--profile", "smoke", "--cohort", str(tiny_cohort_dir), "--seeds", "1",
            "--encoder", "random", "--task", "ad_diagnosis", "--protocol", "linear_probe", "--no-progress",
            "--results", str(results)]
    assert main(args) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "time by phase (1 job(s) run, 0 reused" in printed and "dominant phase:" in printed
    assert main(args) == 0
    lines = [json.loads(line) for line in timing_path(results, "smoke").read_text().splitlines()]
    assert [line["jobs"] for line in lines] == [{"planned": 1, "run": 1, "reused": 0, "failed": 0},
                                                {"planned": 1, "run": 0, "reused": 1, "failed": 0}]
    first = lines[0]
    assert (first["suite"], first["profile"], first["cohort"]) == ("smoke", "smoke", tiny_cohort_dir.name)
    assert first["cpu_count"] >= 1 and first["measured"] == "this process"
    phases = first["phases"]
    assert list(phases) == list(PHASES)
    assert all(p["wall_s"] >= 0 and p["cpu_s"] >= 0 and 0 <= p["share"] <= 1 for p in phases.values())
    for key in ("wall_s", "cpu_s"):  # each rounded to the millisecond in the file
        assert sum(p[key] for p in phases.values()) == pytest.approx(first[key], abs=0.001 * len(phases))
    assert first["wall_s"] == pytest.approx(first["elapsed_s"], abs=0.001)
    # the job read voxels, embedded them and fitted a head, scored with bootstrap CIs (ad_diagnosis: the
    # tiny cohort's brain_age test split has one subject, so no replicates, and a warm process times ~0 s)
    assert all(phases[p]["wall_s"] > 0 for p in ("cohort", "store", "embeddings", "heads", "bootstraps"))
    assert phases["fine-tuning"]["wall_s"] == phases["perturbations"]["wall_s"] == 0
    assert len(list(results.rglob("*.json"))) == 1  # the record; the timing file is not taken for one


def write_smoke_fixture(path: Path) -> None:
    """Run the smoke suite into a temporary folder and write its canonical records to ``path``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if main([*SMOKE_ARGS, "--results", tmp]) != 0:
            raise SystemExit("the smoke suite failed")
        data = json.dumps(_canonical(Path(tmp)), sort_keys=True).encode()
    path.write_bytes(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        raise SystemExit("usage: python tests/test_suite.py --write tests/data/smoke_suite.json.gz")
    write_smoke_fixture(Path(sys.argv[2]))
