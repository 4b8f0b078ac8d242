"""`bench perf`, the optimisations it measures and the phase clock of `bench suite run`
(bench.timing): behaviour only (no timing assertions; the clock is tested on a fake clock).

The fast paths must give the answers of the code they replaced: the inner-CV solvers match
scikit-learn, the channels-last forward matches the default layout, a store entry read into a
batch buffer equals the entry, and a damaged cached embedding is recomputed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from bench.cli import main
from bench.data.store import VolumeStore, read_entry_into
from bench.embeddings import EmbeddingCache, harness_forward, prefers_channels_last
from bench.heads import blas_single_thread
from bench.solvers import binary_logistic_path, ridge_path
from bench.timing import PHASES, PhaseClock, measure, phase, summary


# -- inner-CV solvers ---------------------------------------------------------------------------
def test_ridge_path_is_sklearn_ridge_for_every_alpha():
    rng = np.random.default_rng(0)
    alphas = np.logspace(-3, 5, 17)
    for n, d in ((30, 8), (12, 40)):  # more rows than columns, and fewer
        z, z_test = rng.normal(size=(n, d)), rng.normal(size=(5, d))
        y = 3 * z[:, 0] + rng.normal(size=n) + 10
        want = np.stack([Ridge(alpha=a).fit(z, y).predict(z_test) for a in alphas])
        np.testing.assert_allclose(ridge_path(z, y, z_test, alphas), want, rtol=1e-9, atol=1e-9)


def test_binary_logistic_path_reaches_the_penalised_optimum():
    """Same objective as LogisticRegression(C); compared with scikit-learn run to tol 1e-12."""
    rng = np.random.default_rng(1)
    Cs = np.logspace(-4, 2, 7)
    for n, d in ((60, 10), (25, 90)):  # the second is separable: large C barely regularises it
        z = rng.normal(size=(n, d))
        y = (z[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
        coef, intercept = binary_logistic_path(z, y == 1, Cs)
        for i in (1, 4, 6):  # C = 1e-3, 1, 100
            with blas_single_thread():
                ref = LogisticRegression(C=Cs[i], tol=1e-12, max_iter=100_000).fit(z, y).decision_function(z)
            np.testing.assert_allclose(z @ coef[i] + intercept[i], ref, atol=1e-3 * (1 + np.abs(ref).max()))


def _efron_loglik(z, time, event, beta) -> float:
    """Efron's partial log-likelihood, one tied event time at a time (the definition, loops)."""
    eta = z @ beta
    ll = 0.0
    for u in np.unique(time[event > 0]):
        dead = (time == u) & (event > 0)
        at_risk = np.exp(eta[time >= u]).sum()
        tied = np.exp(eta[dead]).sum()
        m = int(dead.sum())
        ll += eta[dead].sum() - sum(np.log(at_risk - l / m * tied) for l in range(m))
    return ll


def test_cox_efron_is_lifelines_penalised_cox_model():
    """Same model as CoxPHFitter(penalizer): Efron ties, penalty on standardised coefficients. Log
    hazards agree to lifelines' own convergence, and ours is at least as good an optimum."""
    import pandas as pd
    from lifelines import CoxPHFitter

    from bench.solvers import cox_efron

    rng = np.random.default_rng(4)
    for n, d, times in ((60, 4, "tied"), (90, 16, "tied"), (40, 2, "distinct")):
        z = rng.normal(size=(n, d))
        t = rng.integers(1, 12, n).astype(float) if times == "tied" else rng.exponential(10, n)
        t = t * np.exp(-0.5 * z[:, 0])                    # the first column carries the hazard
        t = np.round(t) if times == "tied" else t
        event = (rng.random(n) < 0.6).astype(float)
        zs = (z - z.mean(0)) / z.std(0, ddof=1)
        for pen in (0.01, 1.0):
            df = pd.DataFrame(z, columns=[f"z{i}" for i in range(d)]).assign(time=t, event=event)
            cph = CoxPHFitter(penalizer=pen).fit(df, "time", "event")
            theirs = np.asarray(cph.params_) * z.std(0, ddof=1)    # back to the standardised scale
            ours = cox_efron(zs, t, event, pen)
            np.testing.assert_allclose(zs @ ours, zs @ theirs, atol=2e-3)

            def penalised_nll(beta):  # lifelines' objective, from the textbook Efron formula
                return -_efron_loglik(zs, t, event, beta) + n * pen * 0.5 * beta @ beta

            assert penalised_nll(ours) <= penalised_nll(theirs) + 1e-9


def _fractions_records(tmp_path, name: str) -> dict:
    from dataclasses import replace

    from bench.data.sources import open_cohort
    from bench.profiles import get_profile
    from bench.results import load_record
    from bench.runner import Runner

    profile = replace(get_profile("smoke"), seeds=3, n_boot=20)
    runner = Runner(open_cohort(None, profile="smoke", progress=False), profile, tmp_path / name, progress=False,
                    cache_root=tmp_path / "cache")
    records = {}
    for result in runner.run("oracle", ["brain_age", "ad_diagnosis"], ["fractions"]):
        record = load_record(result.path)
        records[result.task] = ([(s.setting, s.seed, s.split, s.metrics) for s in record.scores], record.predictions)
    return records


@pytest.mark.slow
def test_seed_independent_heads_are_fitted_once_per_training_set(tmp_path, monkeypatch):
    """The fractions protocol trains every seed on the same nested subset: a deterministic head is
    fitted once per subset (5, not 5 x 3 seeds), and the record is what refitting per seed gives."""
    from bench import heads

    fits = []
    for cls in (heads.LogisticHead, heads.RidgeHead):
        real = cls.fit
        monkeypatch.setattr(cls, "fit", lambda self, *a, _real=real, **k: fits.append(type(self).__name__)
                            or _real(self, *a, **k))
    shared = _fractions_records(tmp_path, "shared")
    assert fits.count("RidgeHead") == 5 and fits.count("LogisticHead") == 5
    for cls in (heads.LogisticHead, heads.RidgeHead):
        monkeypatch.setattr(cls, "uses_seed", True)  # as if the fit depended on the seed: refit per seed
    fits.clear()
    refitted = _fractions_records(tmp_path, "refitted")
    assert fits.count("RidgeHead") == 15 and fits.count("LogisticHead") == 15
    assert shared == refitted
    seeds = {seed for scores, _ in shared.values() for _, seed, _, _ in scores}
    assert seeds == {0, 1, 2}


def test_no_probe_head_depends_on_the_seed():
    """Shared fits are only right if the fit ignores the seed: the same data, two seeds, one model."""
    from bench import heads

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 600))  # over 500 columns: where PCA's "auto" solver turns randomised
    survival = np.stack([rng.integers(1, 30, 40), rng.random(40) < 0.6], axis=1).astype(float)
    data = heads.HeadData(x=x, y=survival, groups=np.arange(40) // 2)
    risks = [heads.CoxHead(seed=s).fit(data).predict(data) for s in (0, 1)]
    np.testing.assert_array_equal(risks[0], risks[1])
    assert not any(h.uses_seed for h in (heads.LogisticHead(3), heads.RidgeHead(), heads.CoxHead(),
                                          *(heads.SequenceHead(flat, 2) for flat in (lambda: heads.LogisticHead(2),
                                                                                     heads.RidgeHead, heads.CoxHead))))


# -- embedding pass -----------------------------------------------------------------------------
def test_channels_last_only_for_convolutional_networks():
    resnet = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU())
    patchify = torch.nn.Sequential(torch.nn.Conv3d(1, 4, kernel_size=8, stride=8))  # a ViT's patch embedding
    assert prefers_channels_last(resnet) and not prefers_channels_last(patchify)
    assert not prefers_channels_last(torch.nn.Linear(3, 3))


def test_harness_forward_matches_the_plain_forward_and_restores_the_layout():
    from bench.encoders import get_encoder

    encoder = get_encoder("random")
    x = torch.randn((2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = encoder.embed(x).numpy()
    with harness_forward(encoder) as forward:
        fast = forward(x)
        assert encoder.module().net.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in encoder.module().parameters())


def test_read_entry_into_fills_a_batch_slot(tmp_path):
    volume = np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", volume)
    np.save(tmp_path / "f64.npy", volume.astype(np.float64))
    batch = np.zeros((2, 1, 4, 5, 6), np.float32)
    read_entry_into(tmp_path / "v.npy", batch[1, 0])
    read_entry_into(tmp_path / "f64.npy", batch[0, 0])  # other dtype: converted, not reinterpreted
    np.testing.assert_array_equal(batch[1, 0], volume)
    np.testing.assert_allclose(batch[0, 0], volume)


class _Mean:
    """A stand-in encoder: the mean and max of each volume (no module, default layout)."""

    def __init__(self):
        from bench.encoders import EncoderCard

        self.card = EncoderCard(name="mean", architecture="mean", n_parameters=0, embed_dim=2,
                                input_space="cpu-small", ssl_method="none")
        self.calls = 0

    def checkpoint_hash(self) -> str:
        return "0" * 64

    def embed(self, volumes: torch.Tensor) -> torch.Tensor:
        self.calls += len(volumes)
        flat = volumes.flatten(1)
        return torch.stack([flat.mean(1), flat.amax(1)], dim=1)


def test_embedding_pass_batches_caches_and_recomputes_damaged_entries(tiny_cohort_dir, tmp_path):
    from bench.data.bids import read_bids

    cohort = read_bids(tiny_cohort_dir)
    rows = np.arange(11)  # two full batches of 5 and one of 1
    store, cache, encoder = VolumeStore(tmp_path / "store"), EmbeddingCache(tmp_path / "emb"), _Mean()
    out = cache.embed(encoder, cohort, rows, store, batch_size=5, progress=False)
    for r in rows:  # each row's embedding is its own volume's, whatever batch it was in
        v = np.asarray(store.get(cohort.table.at[r, "path"], "cpu-small"))
        np.testing.assert_allclose(out[r], [v.mean(), v.max()], rtol=1e-5, atol=1e-6)
    assert encoder.calls == len(rows) and cache.computed == len(rows)
    again = EmbeddingCache(tmp_path / "emb")
    damaged = next((tmp_path / "emb").rglob("*.npy"))
    damaged.write_bytes(b"not an array")
    second = again.embed(encoder, cohort, rows, store, batch_size=5, progress=False)
    assert again.computed == 1 and encoder.calls == len(rows) + 1
    for r in rows:
        np.testing.assert_allclose(second[r], out[r], rtol=1e-5, atol=1e-6)


# -- the command --------------------------------------------------------------------------------
def test_perf_refuses_what_it_cannot_measure(capsys):
    assert main(["perf", "--task", "tumour_segmentation"]) == 2
    assert "segmentation task" in capsys.readouterr().err
    assert main(["perf", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_perf_writes_every_figure(tmp_path, capsys):
    """On the smoke cohort (shared with the harness tests), the smallest classification task."""
    out = tmp_path / "perf.json"
    assert main(["perf", "--encoder", "simclr3d", "--profile", "smoke", "--task", "tumour_marker",
                 "--repeats", "1", "--workdir", str(tmp_path), "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "embed_ratio (b)/(a)" in printed and "grid_ratio (d)/(b)" in printed
    fig = json.loads(out.read_text())
    assert fig["embed_ratio"] == pytest.approx(fig["forward_seconds"] / fig["embedding_pass_seconds"])
    assert fig["grid_ratio"] == pytest.approx(fig["grid_seconds"] / fig["embedding_pass_seconds"])
    assert fig["store_scans_per_s"] == pytest.approx(fig["n_scans"] / fig["embedding_pass_seconds"])
    assert (fig["encoder"], fig["task"], fig["profile"], fig["input_space"]) == (
        "simclr3d", "tumour_marker", "smoke", "cpu-small")
    assert fig["n_scans"] == 24 and fig["n_examples"] == 12  # T2w + FLAIR of 12 sessions
    # 5 fractions x 2 seeds + k = 1, 5, 10 x 2 draws (the smoke profile)
    assert fig["grid_settings"] == 5 * 2 + 3 * 2
    assert set(fig["grid_detail"]) == {"features", "fractions", "few_shot"}
    for key in ("forward_seconds", "embedding_pass_seconds", "cold_seconds", "grid_seconds",
                "embed_ratio", "grid_ratio"):
        assert np.isfinite(fig[key]) and fig[key] > 0, key
    peaks = fig["peak_rss_mib"]
    assert peaks["process"] >= max(v for v in peaks.values() if v is not None) > 50
    assert fig["machine"]["cores"] >= 1 and fig["machine"]["torch_threads"] >= 1
    assert not list(tmp_path.glob("mribench-perf-*"))  # its private caches are removed


# -- the phase clock (bench.timing) ---------------------------------------------------------------
class FakeClock:
    """Wall and CPU clocks that move only when told: ``tick(wall, cpu)``."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def tick(self, wall: float, cpu: float | None = None) -> None:
        self.wall += wall
        self.cpu += wall / 2 if cpu is None else cpu

    def clock(self) -> PhaseClock:
        return PhaseClock(wall=lambda: self.wall, cpu=lambda: self.cpu)


def test_nested_phases_are_exclusive_and_add_up_to_the_total():
    fake = FakeClock()
    with measure(fake.clock()) as clock:
        fake.tick(1)                      # other
        with phase("heads"):
            fake.tick(2)                  # heads
            with phase("bootstraps"):
                fake.tick(4, cpu=3)       # bootstraps only, not heads as well
            fake.tick(8)                  # heads again
        with phase("store"):
            with phase("store"):          # the same phase nested: counted once
                fake.tick(16)
        fake.tick(32)                     # other
    assert clock.totals == {"other": [33.0, 16.5], "heads": [10.0, 5.0], "bootstraps": [4.0, 3.0],
                            "store": [16.0, 8.0]}
    assert sum(w for w, _ in clock.totals.values()) == fake.wall == 63
    table = summary(clock.totals)
    assert list(table) == list(PHASES)    # every phase, the ones not seen at zero, other last
    assert table["embeddings"] == {"wall_s": 0.0, "cpu_s": 0.0, "share": 0.0}
    assert table["heads"]["share"] == pytest.approx(10 / 63)


def test_phase_as_a_decorator_outside_a_clock_and_on_another_thread():
    import threading

    fake = FakeClock()

    @phase("embeddings")
    def embed(seconds: float) -> str:
        fake.tick(seconds)
        return "done"

    assert embed(1) == "done"             # no clock running: nothing recorded, nothing fails
    with measure(fake.clock()) as clock:
        assert embed(2) == "done"
        helper = threading.Thread(target=embed, args=(4,))  # not the clock's thread: its own time
        helper.start()                                      # is part of what this thread does
        helper.join()
    assert clock.totals == {"embeddings": [2.0, 1.0], "other": [4.0, 2.0]}


def test_a_nested_clock_pauses_the_outer_one_and_adds_its_phases_to_it():
    fake = FakeClock()
    with measure(fake.clock()) as outer:
        with phase("cohort"):
            fake.tick(1)
        with phase("job grid"):
            fake.tick(2)
            with measure(fake.clock()) as job:   # a job's own clock (bench.runner.run_job)
                fake.tick(4)
                with phase("heads"):
                    fake.tick(8)
            fake.tick(16)
    assert job.totals == {"other": [4.0, 2.0], "heads": [8.0, 4.0]}
    assert outer.totals == {"other": [4.0, 2.0], "cohort": [1.0, 0.5], "job grid": [18.0, 9.0], "heads": [8.0, 4.0]}
    assert sum(w for w, _ in outer.totals.values()) == fake.wall


def test_suite_timing_counts_reused_jobs_and_adds_worker_phases_only_for_remote_jobs(tmp_path):
    from bench.runner import SKIPPED, JobResult
    from bench.suite import GRID, timing_report

    def result(status, phases):
        return JobResult("random", "brain_age", "linear_probe", tmp_path / "r.json", status, phases=phases)

    results = [result("done", {"embeddings": [5.0, 4.0], "other": [1.0, 1.0]}), result(SKIPPED, {}),
               result("failed: ValueError", {"heads": [2.0, 2.0]})]
    client = {"cohort": [3.0, 3.0], GRID: [7.0, 1.0], "other": [1.0, 1.0]}
    local = timing_report(client, results, in_process=True)   # the job phases are in the clock already
    assert local["jobs"] == {"planned": 3, "run": 2, "reused": 1, "failed": 1}
    assert local["phases"]["other"]["wall_s"] == 8.0 and local["phases"]["embeddings"]["wall_s"] == 0.0
    assert local["wall_s"] == local["elapsed_s"] == 11.0 and local["measured"] == "this process"
    remote = timing_report(client, results, in_process=False)  # the wait for the workers is replaced
    assert remote["phases"]["embeddings"] == {"wall_s": 5.0, "cpu_s": 4.0, "share": 5.0 / 12.0}
    assert remote["phases"]["other"]["wall_s"] == 2.0 and remote["phases"]["heads"]["wall_s"] == 2.0
    assert remote["wall_s"] == 12.0 and remote["elapsed_s"] == 11.0 and remote["dominant"] == "embeddings"
