"""The device check (issue 33, items 6 and 4): does the harness give the CPU's numbers on a GPU, and how fast?

Why a script: the GPU machines this project is lent have no network, a torch of their own and a
few minutes each, so the whole check must be one prepared command that cannot stall on one slow
stage and leaves everything it measured in one file. Stages, each with its own time budget
(a stage past its budget is stopped and recorded as timed out; the next one still runs):

1. ``environment``: Python, torch, CUDA and the devices it sees, the project's imports that fail;
2. ``cohort``: the smoke profile's synthetic cohort (``bench data synth``), in a work folder;
3. ``suites``: the smoke suite on the CPU in fp32, then on ``--device`` in fp32 and bf16, plus one
   fine-tuning job (``random`` on ``ad_diagnosis``) on the CPU and on the device, in fp32;
4. ``compare``: each device record against the CPU record of the same job, setting by setting and
   seed by seed: probe scores within ``--probe-tol`` (1e-3) in fp32, the fine-tuned score within the
   spread of the CPU seeds; bf16 differences are reported (bf16 is another result by design);
5. ``perturbations``: the robustness perturbations computed on the device
   (:mod:`bench.perturbations_torch`) against the same torch code on the CPU and, where its libraries
   import, the CPU path itself (TorchIO / MONAI), with the same drawn parameters, on a phantom:
   the largest difference per perturbation (the deterministic ones within ``--perturb-tol``), the
   noise's strength, and the time per batch on the device against the CPU path's per scan;
6. ``robustness``: ``bench run --protocol robustness`` (``random`` on ``ad_diagnosis``) on the CPU
   path and on the device path, the two records compared setting by setting (deterministic
   perturbations within ``--probe-tol``; the noise ones are another draw: reported). Needs TorchIO,
   which imports SimpleITK (the CPU path, and downsample on the device path): skipped without it,
   and at dry-run size;
7. ``pretrain``: ``bench pretrain --encoder simclr3d --config paper`` for as many steps as fit in
   ``--pretrain-seconds`` (counted from its first logged step), then stopped; steps and volumes/s;
8. ``perf``: ``bench perf`` volumes/s (encoder forward and the harness's pass) per encoder with a
   forward pass (``random``, ``simclr3d``) and precision, the CPU's figures beside them, while the
   check has time left (the pretraining window leaves it ``perf_reserve`` seconds).

``--dry-run`` runs every stage at the smallest size (8 subjects, one encoder, pretraining
with ``--config small`` for a few seconds: the paper network does not take a step in that time on
a CPU, a phantom of 24 x 28 x 20 voxels for the perturbations) but the robustness records;
tests/test_device_check.py runs it with ``--device cpu`` so the script cannot rot.

Usage (see device_check.sh, which installs carried wheels first)::

    python benchmarks/device_check.py --out DIR [--device cuda] [--dry-run] [--work DIR]

Writes ``DIR/device_check.json`` after every stage (a run stopped from outside keeps what it had),
with the logs of every command under ``DIR/logs/`` and the records under ``DIR/results/``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Imports the harness needs; a missing one is named in the report (a wheel not carried).
NEEDED = ("numpy", "pandas", "scipy", "sklearn", "torch", "monai", "nibabel", "nilearn", "lifelines",
          "torchio", "pydantic", "yaml", "rich", "matplotlib", "threadpoolctl", "filelock")

#: Subjects of the dry run's cohort (4 ageing/AD, 2 healthy, 2 tumour: enough for every job to run).
DRY_SUBJECTS = 8

#: Seconds per stage on one H100 (the whole check: under 8 minutes with the install).
BUDGETS = {"environment": 60, "cohort": 75, "suite": 60, "finetune": 90, "perf": 40, "pretrain_start": 60,
           "perf_reserve": 50, "perturbations": 60, "robustness": 90}
#: The same at --dry-run size on a 2-core CPU (the whole check: about 85 s; no robustness records).
DRY_BUDGETS = {"environment": 60, "cohort": 30, "suite": 30, "finetune": 40, "perf": 30, "pretrain_start": 30,
               "perf_reserve": 15, "perturbations": 30, "robustness": 60}

#: The robustness job run on the CPU path and on the device path: (encoder, task).
ROBUSTNESS_JOB = ("random", "ad_diagnosis")
#: Phantom (shape, spacing in mm) of the perturbations stage: the smoke space; smaller at dry-run size.
PHANTOM, DRY_PHANTOM = ((64, 64, 64), 3.0), ((24, 28, 20), 3.0)


@dataclass
class Plan:
    """What one check runs: sizes, devices and budgets, all decided before the first stage."""

    out: Path
    work: Path
    device: str = "cuda"
    dry_run: bool = False
    precisions: tuple[str, ...] = ("fp32", "bf16")
    encoders: tuple[str, ...] = ()          # () : the smoke suite's own
    # bench perf times a frozen forward pass: the smoke suite's network encoder and the committed
    # SSL one (volumes and oracle have none to time)
    perf_encoders: tuple[str, ...] = ("random", "simclr3d")
    finetune_encoder: str = "random"
    finetune_task: str = "ad_diagnosis"
    pretrain_seconds: float = 120.0
    pretrain_config: str = "paper"
    pretrain_batch: int = 8                 # bench pretrain's default, named so volumes/s follow
    probe_tol: float = 1e-3
    perturb_tol: float = 1e-4               # device vs CPU, deterministic perturbations, z-scored voxels
    phantom: tuple = PHANTOM
    total_seconds: float = 450.0
    budgets: dict = field(default_factory=lambda: dict(BUDGETS))
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_seconds - (time.monotonic() - self.started)

    def budget(self, stage: str) -> float:
        """A stage's budget, cut to what the whole check has left (never below 5 s)."""
        return max(5.0, min(self.budgets[stage], self.left()))


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the options describe; ``--dry-run`` shrinks every stage."""
    out = Path(args.out or os.environ.get("OUT") or "device-check").resolve()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="mribench-device-check-"))
    plan = Plan(out=out, work=work, device=args.device, dry_run=args.dry_run, probe_tol=args.probe_tol,
                perturb_tol=args.perturb_tol, pretrain_seconds=args.pretrain_seconds, total_seconds=args.total_seconds)
    if args.dry_run:
        plan.encoders = plan.perf_encoders = ("random",)
        plan.pretrain_seconds, plan.pretrain_config, plan.pretrain_batch = min(args.pretrain_seconds, 5.0), "small", 2
        plan.budgets, plan.phantom = dict(DRY_BUDGETS), DRY_PHANTOM
        plan.total_seconds = min(args.total_seconds, 150.0)
    return plan


# ------------------------------------------------------------------------------------ running commands
def bench(*args: str) -> list[str]:
    """``bench ARGS`` through this interpreter (the console script may belong to another Python)."""
    return [sys.executable, "-m", "bench.cli", *args]


def run_command(plan: Plan, name: str, argv: list[str], budget: float, env: dict | None = None) -> dict:
    """Run one command with its output in ``logs/NAME.log``, stopped after ``budget`` seconds."""
    log = plan.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env or command_env(plan),
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=budget), False
        except subprocess.TimeoutExpired:
            rc, timed_out = stop(proc), True
    return {"command": " ".join(argv[2:]), "rc": rc, "seconds": round(time.monotonic() - start, 2),
            "budget_s": round(budget, 1), "timed_out": timed_out, "log": str(log.relative_to(plan.out))}


def stop(proc: subprocess.Popen) -> int:
    """Stop a command and everything it started (its own process group), politely first."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return proc.wait()
    return proc.wait()


def command_env(plan: Plan) -> dict:
    """The environment of every command: the check's own cache (and, at dry-run size, split files)."""
    env = dict(os.environ, MRIBENCH_CACHE=str(plan.work / "cache"), PYTHONUNBUFFERED="1")
    if plan.dry_run:
        env["MRIBENCH_SPLITS"] = str(plan.work / "splits")
    return env


# -------------------------------------------------------------------------------------------- stages
def environment(plan: Plan) -> dict:
    """:func:`probe_environment` in a process of its own: asking for a device's name opens a CUDA
    context, which this process would otherwise hold (and count in the GPU's memory) to the end."""
    return run_probe("d.probe_environment()", plan.budget("environment"))


def run_probe(call: str, budget: float) -> dict:
    """``benchmarks.device_check.<call>`` in a process of its own, its JSON answer (or what failed)."""
    argv = [sys.executable, "-c", f"import json, benchmarks.device_check as d; print(json.dumps({call}))"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=budget,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return {"timed_out": True}
    if done.returncode:
        return {"rc": done.returncode, "error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_environment() -> dict:
    """What this machine is: Python, torch, CUDA, its devices and the imports that fail."""
    import torch

    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except Exception as e:  # a wheel not carried, or one built for another Python
            missing.append(f"{name}: {type(e).__name__}: {e}")
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()), "missing_imports": missing}


def cohort_args(plan: Plan) -> list[str]:
    """How every stage names the cohort: the smoke profile's own, or (dry run) the tiny one."""
    if plan.dry_run:
        return ["--cohort", str(plan.work / "tiny"), "--profile", "smoke"]
    return ["--profile", "smoke"]


def make_cohort(plan: Plan) -> list[dict]:
    """The smoke cohort where the smoke profile looks for it; at dry-run size a dozen subjects and
    split files of their own (the committed smoke splits name subjects the tiny cohort lacks)."""
    workers = str(max(1, min(8, (os.cpu_count() or 2) - 1)))
    if not plan.dry_run:
        out = plan.work / "cache" / "cohorts" / "synth-smoke-seed0-2mm"
        return [run_command(plan, "cohort", bench("data", "synth", "--out", str(out), "--profile", "smoke", "--seed",
                                                  "0", "--workers", workers, "--no-progress"), plan.budget("cohort"))]
    tiny = plan.work / "tiny"
    made = [run_command(plan, "cohort", bench("data", "synth", "--out", str(tiny), "--profile", "smoke", "--subjects",
                                              str(DRY_SUBJECTS), "--seed", "0", "--workers", "2", "--no-progress"),
                        plan.budget("cohort"))]
    made.append(run_command(plan, "splits", bench("splits", "make", "--cohort", str(tiny), "--out",
                                                  str(plan.work / "splits" / "tiny"), "--no-progress", "--no-power"),
                            plan.budget("cohort")))
    return made


REFERENCE = "reference-cpu-fp32"


def suite_runs(plan: Plan) -> list[tuple[str, str, str]]:
    """(label, device, precision) of each suite run: the CPU reference first, then the device in
    each precision (fp32 always: with ``--device cpu`` that is the CPU against itself, which checks
    the comparison and the CPU's reproducibility)."""
    precisions = ("fp32",) + tuple(p for p in plan.precisions if p != "fp32")
    return [(REFERENCE, "cpu", "fp32")] + [(f"{plan.device.replace(':', '')}-{p}", plan.device, p) for p in precisions]


def run_suites(plan: Plan) -> dict:
    """The smoke suite and the fine-tuning job on every (device, precision) of :func:`suite_runs`."""
    done = {}
    encoders = [a for e in plan.encoders for a in ("--encoder", e)]
    seeds = ["--seeds", "1"] if plan.dry_run else []
    for label, device, precision in suite_runs(plan):
        results = str(plan.out / "results" / label)
        hw = ["--device", device, "--precision", precision, "--no-progress", "--results", results]
        suite = run_command(plan, f"suite-{label}", bench("suite", "run", "smoke", *cohort_args(plan), *encoders,
                                                          *seeds, *hw), plan.budget("suite"))
        done[label] = {"device": device, "precision": precision, "suite": suite}
        if precision == "fp32":  # a bf16 fine-tune is another result: the time goes to the fp32 comparison
            done[label]["finetune"] = run_command(plan, f"finetune-{label}", bench(
                "run", "--encoder", plan.finetune_encoder, "--task", plan.finetune_task, "--protocol", "finetune",
                *cohort_args(plan), *seeds, *hw), plan.budget("finetune"))
    return done


def perf_runs(plan: Plan) -> dict:
    """``bench perf`` per encoder on the CPU (fp32) and the device in each precision: volumes/s."""
    figures: dict = {}
    repeats = "1" if plan.dry_run else "2"
    for encoder in plan.perf_encoders:  # the network encoder first: the one the device changes most
        for label, device, precision in perf_runs_of(plan):
            if plan.left() < 10:
                figures.setdefault(encoder, {})[label] = {"skipped": "the check's time was spent"}
                continue
            path = plan.out / "perf" / f"{encoder}-{label}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            ran = run_command(plan, f"perf-{encoder}-{label}", bench(
                "perf", "--encoder", encoder, "--task", "brain_age", *cohort_args(plan), "--repeats", repeats,
                "--device", device, "--precision", precision, "--no-progress", "--json", str(path)),
                plan.budget("perf"))
            figures.setdefault(encoder, {})[label] = {**ran, **perf_figures(path)}
    for encoder, by_label in figures.items():
        base = by_label.get(REFERENCE, {}).get("forward_scans_per_s")
        for label, fig in by_label.items():
            if base and fig.get("forward_scans_per_s"):
                fig["forward_speedup_vs_cpu"] = round(fig["forward_scans_per_s"] / base, 2)
    return figures


def perf_runs_of(plan: Plan) -> list[tuple[str, str, str]]:
    """The suite runs with distinct (device, precision): the CPU's figures once."""
    seen, runs = set(), []
    for label, device, precision in suite_runs(plan):
        if (device, precision) not in seen:
            seen.add((device, precision))
            runs.append((label, device, precision))
    return runs


def perf_figures(path: Path) -> dict:
    """The volumes/s of one ``bench perf --json`` file (empty when the run wrote none)."""
    if not path.is_file():
        return {}
    fig = json.loads(path.read_text())
    keep = ("forward_scans_per_s", "store_scans_per_s", "cold_scans_per_s", "n_scans", "batch_size",
            "input_space", "peak_rss_mib")
    return {k: fig.get(k) for k in keep}


# ------------------------------------------------------------------------------------------ compare
def record_scores(path: Path) -> tuple[str, dict]:
    """A record's protocol and its main metric by (setting, split, seed)."""
    rec = json.loads(path.read_text())
    metric = rec.get("main_score_name")
    scores = {(s.get("setting"), s.get("split"), s.get("seed")): s.get("metrics", {}).get(metric)
              for s in rec.get("scores") or []}
    return rec.get("protocol", ""), scores


def seed_spread(scores: dict) -> dict:
    """Per (setting, split): the mean over seeds and the range of the seeds (max - min)."""
    by: dict = {}
    for (setting, split, _seed), value in scores.items():
        if value is not None:
            by.setdefault((setting, split), []).append(float(value))
    return {k: (sum(v) / len(v), max(v) - min(v)) for k, v in by.items()}


def compare_record(cpu: Path, dev: Path, tol: float, exact: bool) -> dict:
    """One device record against the CPU record of the same job. A probe score must match within
    ``tol`` seed by seed (``exact``: fp32); a fine-tuned one (and any bf16 score) must stay within the
    spread of the CPU's seeds, since training on another device takes another path through float error."""
    protocol, a = record_scores(cpu)
    _, b = record_scores(dev)
    diffs = [abs(float(a[k]) - float(b[k])) for k in a if k in b and a[k] is not None and b[k] is not None]
    out = {"protocol": protocol, "n_scores": len(diffs), "missing": len(set(a) ^ set(b)),
           "max_abs_diff": max(diffs) if diffs else None}
    if exact and protocol != "finetune":
        out.update(rule=f"each score within {tol:g}", ok=bool(diffs) and max(diffs) <= tol and not out["missing"])
        return out
    spread_a, spread_b = seed_spread(a), seed_spread(b)
    gaps = [(abs(spread_a[k][0] - spread_b[k][0]), max(spread_a[k][1], tol)) for k in spread_a if k in spread_b]
    out.update(rule="mean over seeds within the CPU seeds' range (at least the probe tolerance)",
               mean_gaps=[round(g, 6) for g, _ in gaps], allowed=[round(s, 6) for _, s in gaps],
               ok=bool(gaps) and all(g <= s for g, s in gaps))
    return out


def compare_all(plan: Plan, suites: dict) -> dict:
    """Every device record against the CPU record of the same job, by relative path."""
    cpu_root = plan.out / "results" / REFERENCE
    found: dict = {}
    for label, run in suites.items():
        if label == REFERENCE:
            continue
        root = plan.out / "results" / label
        for cpu in sorted(cpu_root.rglob("*.json")) if cpu_root.is_dir() else []:
            rel = cpu.relative_to(cpu_root)
            if rel.parts[0].startswith(".") or cpu.name.endswith(".predictions.json"):
                continue
            dev = root / rel
            if cpu.stem == "finetune" and "finetune" not in run:
                continue  # no fine-tuning in this precision (see run_suites)
            found.setdefault(label, {})[str(rel)] = (
                compare_record(cpu, dev, plan.probe_tol, run["precision"] == "fp32") if dev.is_file()
                else {"ok": False, "missing_record": True})
    return found


# ------------------------------------------------------------------------------------ perturbations
def perturbations(plan: Plan) -> dict:
    """:func:`probe_perturbations` in a process of its own (it opens the device's context)."""
    shape, spacing = plan.phantom
    return run_probe(f"d.probe_perturbations({plan.device!r}, {tuple(shape)!r}, {spacing!r}, {plan.perturb_tol!r})",
                     plan.budget("perturbations"))


def phantom(shape: tuple[int, int, int], seed: int):
    """A brain-like volume as the store holds one: a textured ellipsoid with a brighter core,
    z-scored inside, background exactly 0 (no cohort needed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((g / np.array([0.8, 0.7, 0.75])[:, None, None, None]) ** 2).sum(0))
    brain = r < 1
    v = 1 + 0.5 * np.cos(6 * g[0]) * np.sin(5 * g[1]) + 0.2 * rng.normal(size=shape) + (r < 0.4)
    return np.where(brain, (v - v[brain].mean()) / v[brain].std(), 0).astype(np.float32)


def probe_perturbations(device: str, shape=PHANTOM[0], spacing: float = PHANTOM[1], tol: float = 1e-4) -> dict:
    """Every perturbation at every severity on a batch of two phantoms: on ``device``, in torch on the
    CPU, and on the CPU path where its library imports; per perturbation the largest differences,
    the noise's strength (SD of the change from clean, device / reference) and the seconds."""
    import numpy as np
    import torch

    from bench import perturbations as P
    from bench import perturbations_torch as T

    clean = np.stack([phantom(tuple(shape), s) for s in (0, 1)])[:, None]
    out: dict = {}
    for name in P.PERTURBATIONS:
        path = T.DEVICE_PATHS[name]
        if path.apply is None:
            out[name] = {"path": "cpu", "why": path.why}
            continue
        rows = [compare_severity(name, s, clean, device, spacing) for s in P.SEVERITIES]
        out[name] = summarise_perturbation(rows, path.exact, tol, clean.size)
    checked = [v["ok"] for v in out.values() if "ok" in v]
    return {"device": device, "shape": list(shape), "spacing_mm": spacing, "tolerance": tol,
            "torch": torch.__version__, "perturbations": out, "ok": bool(checked) and all(checked)}


def compare_severity(name: str, severity: int, clean, device: str, spacing: float) -> dict:
    """One perturbation x severity: device vs torch on the CPU vs the CPU path (None where its
    library does not import), with the seconds of each."""
    import numpy as np
    import torch

    from bench import perturbations as P
    from bench.perturbations_torch import perturb_batch

    params = [P.draw_parameters(name, severity, seed=0, subject=f"sub-{i:03d}", session="ses-M00", sequence="T1w")
              for i in range(len(clean))]
    batch = torch.from_numpy(clean).to(device)
    perturb_batch(batch, name, params, spacing)  # warm-up: kernels, plans
    dev, dev_s = timed(lambda: perturb_batch(batch, name, params, spacing).cpu().numpy(), device)
    cpu_torch, torch_s = timed(lambda: perturb_batch(torch.from_numpy(clean), name, params, spacing).numpy(), "cpu")
    try:
        lib, lib_s = timed(lambda: np.stack([P.apply_perturbation(v[0], name, p, spacing)
                                             for v, p in zip(clean, params)])[:, None], "cpu")
    except ImportError as e:  # TorchIO without SimpleITK, say: the torch CPU code is the reference
        lib, lib_s, missing = None, None, f"{type(e).__name__}: {e}"
    else:
        missing = None
    reference = lib if lib is not None else cpu_torch
    row = {"severity": severity, "device_s_per_batch": dev_s, "torch_cpu_s_per_batch": torch_s,
           "cpu_path_s_per_scan": round(lib_s / len(clean), 5) if lib_s is not None else None,
           "max_abs_vs_torch_cpu": float(np.abs(dev - cpu_torch).max()),
           "max_abs_vs_cpu_path": float(np.abs(dev - lib).max()) if lib is not None else None,
           "noise_sd_ratio": float((dev - clean).std() / max(float((reference - clean).std()), 1e-12))}
    return {**row, **({"cpu_path_unavailable": missing} if missing else {})}


def timed(work, device: str):
    """(result, seconds), the device synchronised before the clock stops."""
    import torch

    start = time.perf_counter()
    result = work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, round(time.perf_counter() - start, 5)


def summarise_perturbation(rows: list[dict], exact: bool, tol: float, voxels: int) -> dict:
    """A perturbation's verdict: deterministic ones within ``tol`` of both references; noise of the
    reference's strength: the SD of the change from clean within 2 %, or five standard errors of
    the ratio of two sample SDs (1 / sqrt(voxels)) where the phantom is too small for 2 %."""
    worst = lambda key: max((r[key] for r in rows if r.get(key) is not None), default=None)  # noqa: E731
    ratios = [r["noise_sd_ratio"] for r in rows]
    if exact:
        diffs = [d for d in (worst("max_abs_vs_torch_cpu"), worst("max_abs_vs_cpu_path")) if d is not None]
        ok, rule = max(diffs) <= tol, f"|device - cpu| <= {tol:g} at every severity"
    else:
        allowed = max(0.02, 5 / math.sqrt(voxels))
        ok, rule = all(abs(q - 1) <= allowed for q in ratios), f"SD of the noise within {allowed:.1%} of the CPU's"
    return {"path": "device", "exact": exact, "rule": rule, "ok": bool(ok),
            "max_abs_vs_torch_cpu": worst("max_abs_vs_torch_cpu"), "max_abs_vs_cpu_path": worst("max_abs_vs_cpu_path"),
            "noise_sd_ratio": [round(q, 4) for q in ratios], "severities": rows}


# --------------------------------------------------------------------------------------- robustness
def robustness(plan: Plan, env_report: dict) -> dict:
    """The robustness job on the CPU path (reference) and on the device path, and their comparison.
    Skipped where TorchIO does not import (it needs SimpleITK): the CPU path is TorchIO's; and at
    dry-run size, whose 150 s have no room for two robustness jobs (tests/test_perturbations_device.py
    runs the protocol on both paths, and :func:`compare_robustness` on records made by hand)."""
    missing = [m for m in env_report.get("missing_imports", []) if m.split(":")[0] == "torchio"]
    if missing:
        return {"skipped": f"the CPU path cannot run here ({missing[0]}); carry SimpleITK to compare records"}
    if plan.dry_run:
        return {"skipped": "dry run: no time for two robustness jobs"}
    encoder, task = ROBUSTNESS_JOB
    workers = str(max(1, min(8, (os.cpu_count() or 2) - 2)))  # the CPU path perturbs in the loader's workers
    runs: dict = {}
    for label, device, mode in robustness_runs(plan):
        results = plan.out / "robustness" / label
        env = dict(command_env(plan), MRIBENCH_DEVICE_PERTURBATIONS=mode)
        runs[label] = run_command(plan, f"robustness-{label}", bench(
            "run", "--encoder", encoder, "--task", task, "--protocol", "robustness", *cohort_args(plan),
            "--device", device, "--precision", "fp32", "--loader-workers", workers, "--no-progress",
            "--results", str(results)), plan.budget("robustness"), env)
    labels = [label for label, _, _ in robustness_runs(plan)]
    found = [next(iter(sorted((plan.out / "robustness" / label).rglob("robustness.json"))), None) for label in labels]
    runs["compare"] = (compare_robustness(found[0], found[1], plan.probe_tol) if all(found)
                       else {"ok": False, "missing_record": [str(f) for f in found]})
    return runs


def robustness_runs(plan: Plan) -> list[tuple[str, str, str]]:
    """(label, device, MRIBENCH_DEVICE_PERTURBATIONS) of the two robustness runs: the CPU path, then
    the device path (forced where the device is the CPU, so that a dry run exercises it)."""
    return [(REFERENCE, "cpu", "never"),
            (f"{plan.device.replace(':', '')}-fp32", plan.device, "always" if plan.device == "cpu" else "auto")]


def compare_robustness(cpu: Path, dev: Path, tol: float) -> dict:
    """The device path's record against the CPU path's, setting by setting, seed by seed and metric by
    metric (a small split leaves the main one undefined): clean and the deterministic perturbations
    within ``tol``; the noise ones (another draw) reported."""
    from bench.perturbations_torch import DEVICE_PATHS

    a, b = record_metrics(cpu), record_metrics(dev)
    noise = {n for n, p in DEVICE_PATHS.items() if p.apply is not None and not p.exact}
    gaps: dict = {}
    for key in a.keys() & b.keys():
        if a[key] is not None and b[key] is not None:
            name = str(key[0]).rpartition("@")[0] or str(key[0])
            gaps.setdefault(name, []).append(abs(float(a[key]) - float(b[key])))
    worst = {name: round(max(g), 6) for name, g in sorted(gaps.items())}
    exact = [g for name, g in worst.items() if name not in noise]
    paths = json.loads(dev.read_text()).get("robustness", {}).get("perturbation_paths")
    return {"rule": f"clean and deterministic perturbations within {tol:g}; noise reported",
            "max_abs_diff_by_perturbation": worst, "missing": len(set(a) ^ set(b)), "perturbation_paths": paths,
            "ok": bool(exact) and max(exact) <= tol and not set(a) ^ set(b)}


def record_metrics(path: Path) -> dict:
    """Every metric of a record's scores by (setting, split, seed, metric)."""
    rec = json.loads(path.read_text())
    return {(s.get("setting"), s.get("split"), s.get("seed"), m): v
            for s in rec.get("scores") or [] for m, v in (s.get("metrics") or {}).items()}


# ----------------------------------------------------------------------------------------- pretrain
def pretrain(plan: Plan) -> dict:
    """``bench pretrain`` stopped ``pretrain_seconds`` after its first logged step: the steps it took
    and its rate, measured between the first and last step seen (start-up, the store's prefetch and
    the network's placement are outside that window and reported apart)."""
    out = plan.work / "pretrain"
    log_tsv = out / "loss.tsv"
    argv = bench("pretrain", "--encoder", "simclr3d", "--config", plan.pretrain_config, "--steps", "1000000",
                 "--checkpoint-every", "1000000", "--lr-schedule", "constant", "--device", plan.device,
                 "--out", str(out), "--no-progress", "--batch-size", str(plan.pretrain_batch), *cohort_args(plan))
    log = plan.out / "logs" / "pretrain.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=command_env(plan), start_new_session=True)
        first, last, memory = watch_steps(plan, proc, log_tsv, start)
        rc = stop(proc) if proc.poll() is None else proc.returncode
    result = {"command": " ".join(argv[2:]), "log": str(log.relative_to(plan.out)), "rc": rc,
              "startup_seconds": round(first[0] - start, 2) if first else None, "steps": last[1] if last else 0,
              "batch_size": plan.pretrain_batch, "config": plan.pretrain_config, "gpu_memory_used_mib_max": memory}
    if first and last and last[0] > first[0]:
        rate = (last[1] - first[1]) / (last[0] - first[0])
        result.update(window_seconds=round(last[0] - first[0], 2), steps_per_s=round(rate, 3),
                      volumes_per_s=round(rate * plan.pretrain_batch, 2),
                      losses=read_losses(log_tsv)[:1] + read_losses(log_tsv)[-1:])
    return result


def watch_steps(plan: Plan, proc: subprocess.Popen, log_tsv: Path, start: float):
    """Poll ``loss.tsv`` until ``pretrain_seconds`` after the first step, the process ends, or the
    budgets run out; returns (time, steps) at the first and the last step seen, and the most GPU
    memory ``nvidia-smi`` reported in use meanwhile (None without it)."""
    first = last = memory = None
    polls = 0
    while proc.poll() is None:
        polls += 1
        if polls % 8 == 1:  # every 2 s
            memory = max(filter(None, (memory, gpu_memory_used())), default=None)
        now, steps = time.monotonic(), len(read_losses(log_tsv))
        if steps and first is None:
            first = (now, steps)
        if steps and (last is None or steps > last[1]):
            last = (now, steps)
        waited = now - start
        if first is None and waited > plan.budget("pretrain_start"):
            break
        if first is not None and (now - first[0] >= plan.pretrain_seconds or plan.left() < plan.budgets["perf_reserve"]):
            break
        time.sleep(0.25)
    return first, last, memory


def gpu_memory_used() -> int | None:
    """MiB in use on the busiest GPU, as ``nvidia-smi`` reports it (None without one)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5).stdout
        return max(int(v) for v in text.split())
    except (subprocess.SubprocessError, ValueError):
        return None


def read_losses(path: Path) -> list[float]:
    """The losses logged so far (a line being written is skipped)."""
    if not path.is_file():
        return []
    losses = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].isdigit():
            try:
                losses.append(float(parts[1]))
            except ValueError:
                pass
    return losses


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./device-check)")
    p.add_argument("--work", default=None, help="cohort, caches and checkpoints (default: a temporary folder, "
                                                "removed at the end)")
    p.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    p.add_argument("--dry-run", action="store_true", help="every stage at the smallest size (about 85 s on two CPU cores)")
    p.add_argument("--probe-tol", type=float, default=1e-3, help="fp32 probe scores: largest difference allowed")
    p.add_argument("--perturb-tol", type=float, default=1e-4, help="deterministic perturbations on the device: "
                                                                   "largest voxel difference from the CPU allowed")
    p.add_argument("--pretrain-seconds", type=float, default=120.0, help="pretraining time after its first step")
    p.add_argument("--total-seconds", type=float, default=450.0, help="budget of the whole check (stages shrink "
                                                                      "to what is left)")
    return p.parse_args(argv)


def write_report(plan: Plan, report: dict) -> Path:
    """``device_check.json``, rewritten after every stage."""
    plan.out.mkdir(parents=True, exist_ok=True)
    report["elapsed_s"] = round(time.monotonic() - plan.started, 1)
    path = plan.out / "device_check.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def summary(report: dict) -> dict:
    """The verdicts: every stage ran, every command finished, every comparison held."""
    failed = [name for name, value in report.items() if isinstance(value, dict) and "error" in value]
    suites = {} if "suites" in failed else report.get("suites", {})
    cohort = report.get("cohort") if isinstance(report.get("cohort"), list) else []
    robust = {} if "robustness" in failed else report.get("robustness", {})
    commands = [c for run in suites.values() for k, c in run.items() if k in ("suite", "finetune")] + cohort
    commands += [c for k, c in robust.items() if k != "compare" and isinstance(c, dict) and "rc" in c]
    verdicts: dict = {"stages_failed": failed,
                      "commands_ok": not failed and all(c["rc"] == 0 and not c["timed_out"] for c in commands)}
    compare = {} if "compare" in failed else report.get("compare", {})
    for label, by in compare.items():  # fp32: the CPU's numbers; bf16: within the CPU seeds' range
        verdict = "matches_cpu" if label.endswith("fp32") else "within_cpu_seed_spread"
        verdicts[f"{label}_{verdict}"] = bool(by) and all(c.get("ok") for c in by.values())
    perturbed = {} if "perturbations" in failed else report.get("perturbations", {})
    verdicts["perturbations_fp32_matches_cpu"] = bool(perturbed.get("ok")) if perturbed else None  # None: not run
    verdicts["robustness_fp32_matches_cpu"] = robust.get("compare", {}).get("ok")  # None: skipped
    pretrained = report.get("pretrain", {})
    verdicts.update(pretrain_steps=pretrained.get("steps", 0), pretrain_volumes_per_s=pretrained.get("volumes_per_s"))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    """Run the stages in order, writing the report after each; 0 when commands ran and fp32 matched."""
    plan = plan_from(parse_args(argv))
    report: dict = {"plan": {k: v for k, v in asdict(plan).items() if k != "started"}}
    try:
        for stage, work in (("environment", lambda: environment(plan)), ("cohort", lambda: make_cohort(plan)),
                            ("suites", lambda: run_suites(plan)),
                            ("compare", lambda: compare_all(plan, report.get("suites", {}))),
                            ("perturbations", lambda: perturbations(plan)),
                            ("robustness", lambda: robustness(plan, report.get("environment", {}))),
                            ("pretrain", lambda: pretrain(plan)), ("perf", lambda: perf_runs(plan))):
            print(f"[device check] {stage} ({plan.left():.0f} s left)", flush=True)
            try:
                report[stage] = work()
            except Exception as e:  # one stage's failure is a finding; the next stages still run
                report[stage] = {"error": f"{type(e).__name__}: {e}"}
            write_report(plan, report)
        report["summary"] = summary(report)
        print(json.dumps(report["summary"]), flush=True)
        print(f"[device check] wrote {write_report(plan, report)}", flush=True)
    finally:
        if plan.work.name.startswith("mribench-device-check-"):
            shutil.rmtree(plan.work, ignore_errors=True)
    verdicts = report["summary"]
    fp32 = [v for k, v in verdicts.items() if k.endswith("fp32_matches_cpu") and v is not None]
    return 0 if verdicts["commands_ok"] and fp32 and all(fp32) else 1


if __name__ == "__main__":
    sys.exit(main())
