"""The robustness perturbations in torch (bench/perturbations_torch.py) against the CPU path.

On CPU tensors: a CPU cannot catch a tensor left on the wrong device, but it checks the maths. Each
device-capable perturbation at every severity, with the parameters ``draw_parameters`` gives the CPU
path, must give the CPU path's volume (bit for bit where the arithmetic is the same, within float
error for motion's resampling); the noise perturbations, whose values come from another generator,
must give noise of the same strength. Then the robustness protocol runs end to end with the device
path forced on the CPU and must score what the CPU path scores.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench import perturbations as P
from bench import perturbations_torch as T
from bench.errors import MribenchError
from bench.paths import repo_root

#: Largest |device - CPU| allowed per deterministic perturbation on CPU tensors (z-scored volumes);
#: 0 means bit-identical. Motion resamples with another interpolation code than SimpleITK's.
TOLERANCE = {"motion": 1e-5}
sys.path.insert(0, str(repo_root()))
from benchmarks import device_check  # noqa: E402  (its phantom: one shape of test volume for both)

SHAPE, SPACING = (40, 44, 36), 3.0   # not a cube: an axis mixed up shows
DEVICE = [n for n in P.PERTURBATIONS if T.on_device(n)]
DETERMINISTIC = [n for n in DEVICE if T.DEVICE_PATHS[n].exact]
NOISE = [n for n in DEVICE if not T.DEVICE_PATHS[n].exact]


def phantom(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """The device check's phantom (a textured, z-scored ellipsoid) at this file's default shape."""
    return device_check.phantom(shape, seed)


def params(name: str, severity: int, subject: str = "sub-001") -> dict:
    return P.draw_parameters(name, severity, seed=0, subject=subject, session="ses-M00", sequence="T1w")


def both(volume: np.ndarray, name: str, severity: int, subject: str = "sub-001") -> tuple[np.ndarray, np.ndarray]:
    """(CPU path, torch path) of one volume with the same drawn parameters."""
    p = params(name, severity, subject)
    cpu = P.apply_perturbation(volume, name, p, SPACING)
    dev = T.apply_perturbation(torch.from_numpy(volume), name, p, SPACING).numpy()
    return cpu, dev


def test_every_perturbation_declares_its_path_in_one_place():
    assert set(T.DEVICE_PATHS) == set(P.PERTURBATIONS)
    assert [n for n in P.PERTURBATIONS if not T.on_device(n)] == ["downsample"]
    assert set(NOISE) == {"gaussian_noise", "rician_noise"}
    assert all(T.DEVICE_PATHS[n].why for n in P.PERTURBATIONS)
    with pytest.raises(MribenchError, match="unknown perturbation 'zipper'"):
        T.on_device("zipper")
    with pytest.raises(MribenchError, match="no device implementation"):
        T.apply_perturbation(torch.zeros(SHAPE), "downsample", params("downsample", 1), SPACING)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_perturbations_give_the_cpu_volume(name):
    vol = phantom()
    for severity in P.SEVERITIES:
        cpu, dev = both(vol, name, severity)
        assert dev.dtype == np.float32 and dev.shape == cpu.shape
        diff = float(np.abs(cpu - dev).max())
        assert diff <= TOLERANCE.get(name, 0.0), f"{name}@{severity}: max |device - cpu| = {diff:.3g}"
        assert not np.array_equal(dev, vol)  # the artefact is really there


def test_motion_before_and_after_half_the_acquisition():
    """TorchIO orders the two spectra by the movement's time: sub-001 moves after half (0.505),
    sub-002 before (0.4977); both orders give the CPU's volume."""
    vol = phantom()
    assert params("motion", 5, "sub-001")["times"][0] > 0.5 > params("motion", 5, "sub-002")["times"][0]
    for subject in ("sub-001", "sub-002"):
        cpu, dev = both(vol, "motion", 5, subject)
        assert float(np.abs(cpu - dev).max()) <= TOLERANCE["motion"]


@pytest.mark.parametrize("name", NOISE)
def test_noise_has_the_cpu_paths_strength(name):
    """Same drawn std, other values: the SD (and mean) of the change from clean match the CPU's."""
    vol = phantom()
    for severity in P.SEVERITIES:
        cpu, dev = both(vol, name, severity)
        sd_cpu, sd_dev = float((cpu - vol).std()), float((dev - vol).std())
        assert sd_dev == pytest.approx(sd_cpu, rel=0.02), f"{name}@{severity}: SD {sd_dev:.4f} vs {sd_cpu:.4f}"
        assert float((dev - vol).mean()) == pytest.approx(float((cpu - vol).mean()), abs=0.02 * sd_cpu)
        again = T.apply_perturbation(torch.from_numpy(vol), name, params(name, severity), SPACING).numpy()
        assert np.array_equal(dev, again)  # seeded from the parameters: the same noise every time
    other = T.apply_perturbation(torch.from_numpy(vol), name, params(name, 3, "sub-002"), SPACING).numpy()
    assert not np.array_equal(other, both(vol, name, 3)[1])  # another scan, another seed


def test_gaussian_noise_on_a_cpu_is_torchios_own_draw_and_rician_is_not_numpys():
    """The documented fact: a CPU generator seeded with the drawn seed is TorchIO's stream (the same
    values); MONAI's Rician noise comes from numpy (other values, same strength); on CUDA both differ."""
    vol = phantom()
    cpu, dev = both(vol, "gaussian_noise", 4)
    assert np.array_equal(cpu, dev)
    cpu, dev = both(vol, "rician_noise", 4)
    assert not np.allclose(cpu, dev, atol=1e-3)


def test_a_batch_is_perturbed_scan_by_scan_and_left_as_it_was():
    vols = np.stack([phantom(seed=0), phantom(seed=1)])[:, None]
    batch = torch.from_numpy(vols.copy())
    drawn = [params("ghosting", 3, "sub-001"), params("ghosting", 3, "sub-002")]
    out = T.perturb_batch(batch, "ghosting", drawn, SPACING)
    assert out.shape == batch.shape and torch.equal(batch, torch.from_numpy(vols))  # input untouched
    for i in range(2):
        assert np.array_equal(out[i, 0].numpy(), P.apply_perturbation(vols[i, 0], "ghosting", drawn[i], SPACING))
    with pytest.raises(MribenchError, match="B parameter sets"):
        T.perturb_batch(batch, "ghosting", drawn[:1], SPACING)


def test_an_empty_volume_stays_empty_as_on_the_cpu():
    empty = np.zeros(SHAPE, dtype=np.float32)
    for name in ("contrast", "blur"):
        cpu, dev = both(empty, name, 2)
        assert np.array_equal(cpu, dev) and not dev.any()


def test_the_robustness_protocol_on_the_device_path_scores_what_the_cpu_path_scores(
        tiny_cohort_dir, tiny_splits_root, tmp_path, monkeypatch):
    """``random`` on ad_diagnosis (smoke profile at severity 5; a perturbation of each kind, and
    downsample, which stays on the CPU) through the Runner twice: on the CPU path, then with
    ``MRIBENCH_DEVICE_PERTURBATIONS=always``. The same scores (Rician noise aside: another draw, and
    an AUC of three subjects moves by 0.25 when one rank does), and underneath, the cached embeddings
    of every evaluated scan the same within float error (Rician noise's: near)."""
    from bench.data.sources import open_cohort
    from bench.profiles import get_profile
    from bench.protocols import robustness
    from bench.runner import Runner

    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    names = ("contrast", "rician_noise", "motion", "downsample")
    monkeypatch.setattr(robustness, "PERTURBATIONS", {n: P.PERTURBATIONS[n] for n in names})
    cohort = open_cohort(tiny_cohort_dir, progress=False)
    profile = replace(get_profile("smoke"), seeds=1, n_boot=20, robustness_severities=(5,))
    records, runner = {}, None
    for mode in ("never", "always"):
        monkeypatch.setenv(robustness.DEVICE_PERTURBATIONS_ENV, mode)
        runner = Runner(cohort, profile, tmp_path / mode, progress=False, cache_root=tmp_path / "cache",
                        splits_root=tiny_splits_root)
        (result,) = runner.run("random", ["ad_diagnosis"], ["robustness"])
        assert result.status == "done", result.error
        records[mode] = load_record(result.path)
        assert runner.embeddings.computed > 0  # the device path's embeddings have keys of their own
    cpu, dev = records["never"], records["always"]
    assert "perturbation_paths" not in cpu.robustness  # the CPU path's block is what it always was
    assert dev.robustness["perturbation_paths"] == {n: ("cpu" if n == "downsample" else "device") for n in names}
    assert dev.robustness["parameters_sha256"] == cpu.robustness["parameters_sha256"]
    _assert_scores_close(cpu, dev)
    _assert_embeddings_close(runner, cohort, cpu.robustness["scans"], names)


def load_record(path):
    from bench.results import load_record as load

    return load(path)


def _assert_scores_close(cpu, dev) -> None:
    """Every setting's every metric equal within 1e-4, Rician noise's printed only (see above)."""
    def table(record):
        return {(s.setting, s.split, s.seed, m): v for s in record.scores for m, v in s.metrics.items()
                if v is not None}

    a, b = table(cpu), table(dev)
    assert a.keys() == b.keys() and a
    gaps = {k: abs(b[k] - v) for k, v in a.items()}
    print("\n[device path] largest |device - cpu| per setting " + json.dumps(
        {s: max(g for k, g in gaps.items() if k[0] == s) for s in sorted({k[0] for k in gaps})}))
    for key, gap in gaps.items():
        assert key[0].startswith("rician") or gap <= 1e-4, f"{key}: {b[key]} vs cpu {a[key]}"


def _assert_embeddings_close(runner, cohort, scans, names) -> None:
    """The evaluated scans' embeddings of both paths, read back from the cache (nothing recomputed):
    the device path's are the CPU path's within float error, Rician noise's within 0.2 x their norm."""
    from bench.encoders import get_encoder
    from bench.protocols.robustness import cache_tag, device_cache_tag

    table = cohort.table
    rows = [int(table.index[(table.participant_id == a) & (table.session_id == b) & (table.sequence == c)][0])
            for a, b, c in scans]
    encoder, before = get_encoder("random"), runner.embeddings.computed
    for name in names:
        device_tag = cache_tag if name == "downsample" else device_cache_tag
        for severity in (5,):
            a = runner.embeddings.embed(encoder, cohort, rows, runner.store, perturbation=cache_tag(name, severity),
                                        progress=False)
            b = runner.embeddings.embed(encoder, cohort, rows, runner.store,
                                        perturbation=device_tag(name, severity), progress=False)
            worst = max(float(np.abs(a[r] - b[r]).max() / np.linalg.norm(a[r])) for r in rows)
            assert worst <= (0.2 if name == "rician_noise" else 1e-5), f"{name}@{severity}: {worst:.3g}"
    assert runner.embeddings.computed == before  # all of them came from the cache


# -- the device check's new stages (benchmarks/device_check.py), on the CPU ----------------------
def _device_check():
    import sys

    from bench.paths import repo_root

    sys.path.insert(0, str(repo_root()))
    from benchmarks import device_check

    return device_check


def test_the_device_checks_perturbation_probe_on_cpu_tensors():
    probe = _device_check().probe_perturbations("cpu", (16, 18, 14), 3.0, 1e-4)
    assert probe["ok"] and probe["perturbations"]["downsample"]["path"] == "cpu"
    motion = probe["perturbations"]["motion"]
    assert motion["ok"] and motion["max_abs_vs_torch_cpu"] == 0.0 and motion["max_abs_vs_cpu_path"] <= 1e-5
    rician = probe["perturbations"]["rician_noise"]
    assert rician["ok"] and not rician["exact"] and all(0.9 <= q <= 1.1 for q in rician["noise_sd_ratio"])
    assert len(motion["severities"]) == len(P.SEVERITIES) and motion["severities"][0]["device_s_per_batch"] >= 0


def _record(path, scores: dict) -> object:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"main_score_name": "auc", "robustness": {"perturbation_paths": {"blur": "device"}},
                                "scores": [{"setting": s, "split": "test", "seed": 0, "metrics": {"auc": v, "bacc": v}}
                                           for s, v in scores.items()]}))
    return path


def test_the_device_check_compares_robustness_records_and_reports_noise(tmp_path):
    d = _device_check()
    cpu = _record(tmp_path / "cpu.json", {"clean": 0.8, "blur@1": 0.7, "rician_noise@1": 0.6})
    same = _record(tmp_path / "same.json", {"clean": 0.8, "blur@1": 0.7004, "rician_noise@1": 0.9})
    out = d.compare_robustness(cpu, same, 1e-3)
    assert out["ok"] and out["max_abs_diff_by_perturbation"] == {"blur": 0.0004, "clean": 0.0, "rician_noise": 0.3}
    assert out["perturbation_paths"] == {"blur": "device"}
    off = _record(tmp_path / "off.json", {"clean": 0.8, "blur@1": 0.75, "rician_noise@1": 0.6})
    assert not d.compare_robustness(cpu, off, 1e-3)["ok"]
    lost = _record(tmp_path / "lost.json", {"clean": 0.8, "rician_noise@1": 0.6})
    assert not d.compare_robustness(cpu, lost, 1e-3)["ok"]
    plan = d.Plan(out=tmp_path, work=tmp_path / "w", dry_run=True)
    assert "dry run" in d.robustness(plan, {"missing_imports": []})["skipped"]
    assert "SimpleITK" in d.robustness(plan, {"missing_imports": ["torchio: ModuleNotFoundError: No module named "
                                                                  "'SimpleITK'"]})["skipped"]


def test_the_device_checks_verdicts_count_the_new_stages_only_when_they_ran():
    d = _device_check()
    ran = {"rc": 0, "timed_out": False}
    report = {"cohort": [ran], "suites": {"cpu-fp32": {"suite": ran}}, "compare": {"cpu-fp32": {"a": {"ok": True}}}}
    verdicts = d.summary(report)
    assert verdicts["perturbations_fp32_matches_cpu"] is None and verdicts["robustness_fp32_matches_cpu"] is None
    report.update(perturbations={"ok": True}, robustness={"skipped": "no SimpleITK"})
    verdicts = d.summary(report)
    assert verdicts["perturbations_fp32_matches_cpu"] is True and verdicts["robustness_fp32_matches_cpu"] is None
    report.update(perturbations={"timed_out": True},
                  robustness={"cuda-fp32": {"rc": 0, "timed_out": True}, "compare": {"ok": True}})
    verdicts = d.summary(report)
    assert verdicts["perturbations_fp32_matches_cpu"] is False and not verdicts["commands_ok"]
