"""`bench pretrain --nproc 2`: two gloo processes under torchrun, a rank-0 checkpoint, an exact resume.

The logged loss of a step is checked against a recomputation in this process from what the
semantics promise: the global batch drawn from the shared stream, rank r training on scans
r, r+2, ... with its own view stream, the mean over ranks logged. Step 1 starts from the seeded
initial weights; step 3 (the first after the resume) from the step-2 checkpoint, so a resume that
lost any rank's state would log another number.
"""

from __future__ import annotations

import copy

import json

import numpy as np
import pytest
import torch

from baselines.simclr3d import SimCLR3D, SimCLRMethod
from bench.cli import main
from bench.data.sources import open_cohort
from bench.data.store import VolumeStore
from bench.errors import MribenchError
from bench.paths import cache_home
from bench.pretrain import pretrain, pretraining_pool, read_pretrain_state

pytestmark = pytest.mark.slow
SEED, BATCH, WORLD = 3, 4, 2


def logged_losses(out) -> list[float]:
    lines = (out / "loss.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss"
    return [float(line.split("\t")[1]) for line in lines[1:]]


def expected_step_loss(method: SimCLRMethod, paths: list[str], shared_rng: np.random.Generator,
                       rank_rngs: list[np.random.Generator], torch_states: list[torch.Tensor]) -> float:
    """Mean over the two ranks of the recipe's loss on each rank's shard of the global batch."""
    store = VolumeStore(cache_home() / "store")
    pick = np.sort(shared_rng.choice(len(paths), size=BATCH, replace=False))
    method.net.train()
    losses = []
    for rank in range(WORLD):
        torch.set_rng_state(torch_states[rank])
        x = torch.from_numpy(np.stack([np.asarray(store.get(paths[i], method.input_space), np.float32)
                                       for i in pick[rank::WORLD]]))[:, None]
        own = copy.deepcopy(method)  # each rank has its own memory queue (DDP syncs it from rank 0 per step)
        with torch.no_grad():
            losses.append(float(own.loss(x, rank_rngs[rank])))
    return float(np.mean(losses))


def test_pretrain_on_two_gloo_processes_checkpoints_and_resumes_exactly(tiny_cohort_dir, tiny_splits_root, tmp_path,
                                                                         monkeypatch, capfd):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    out = tmp_path / "run"
    args = ["pretrain", "--encoder", "simclr3d", "--nproc", str(WORLD), "--batch-size", str(BATCH),
            "--checkpoint-every", "2", "--seed-train", str(SEED), "--cohort", str(tiny_cohort_dir), "--out", str(out),
            "--no-progress"]

    # this process is the launcher (as `bench pretrain --nproc 2` would be); torchrun and the ranks are children
    assert main([*args, "--steps", "2"]) == 0
    printed = capfd.readouterr().out
    assert "simclr3d in 2 processes (torchrun, gloo)" in printed
    assert printed.count("pretrained simclr3d") == 1  # rank 0 reports, rank 1 stays quiet
    step2 = read_pretrain_state(out / "last.pt")
    assert step2["step"] == 2 and step2["world_size"] == WORLD and len(step2["ranks"]) == WORLD
    assert step2["ranks"][0]["numpy_rng"] != step2["ranks"][1]["numpy_rng"]  # one view stream per rank
    before = logged_losses(out)
    assert len(before) == 2 and all(np.isfinite(before))

    cohort = open_cohort(tiny_cohort_dir, progress=False)
    t = cohort.table
    paths = t[t["participant_id"].isin(pretraining_pool(cohort)) & (t["sequence"] == "T1w")]["path"].tolist()
    # step 1, from the seeded initial weights and the seeded streams
    seeds = [int(np.random.SeedSequence((SEED, r)).generate_state(1)[0]) for r in range(WORLD)]
    states = []
    for s in seeds:
        torch.manual_seed(s)
        states.append(torch.get_rng_state())
    step1 = expected_step_loss(SimCLRMethod("small", seed=SEED), paths, np.random.default_rng(SEED),
                               [np.random.default_rng((SEED, r)) for r in range(WORLD)], states)
    assert before[0] == pytest.approx(step1, rel=1e-4)

    assert main([*args, "--steps", "4", "--resume"]) == 0
    after = logged_losses(out)
    assert len(after) == 4 and after[:2] == before
    # step 3, from the step-2 checkpoint: weights, the shared stream and each rank's streams
    method = SimCLRMethod("small", seed=SEED)
    method.network().load_state_dict(step2["network"])  # the network and its memory queue
    shared = np.random.default_rng(0)
    shared.bit_generator.state = step2["numpy_rng"]
    rank_rngs = []
    for r in range(WORLD):
        g = np.random.default_rng(0)
        g.bit_generator.state = step2["ranks"][r]["numpy_rng"]
        rank_rngs.append(g)
    step3 = expected_step_loss(method, paths, shared, rank_rngs, [s["torch_rng"] for s in step2["ranks"]])
    assert after[2] == pytest.approx(step3, rel=1e-4)

    final = read_pretrain_state(out / "last.pt")
    assert final["step"] == 4 and final["losses"] == pytest.approx(after, abs=1e-6)
    card = json.loads((out / "encoder.json").read_text())
    assert card["pretraining_data"]["processes"] == WORLD
    assert SimCLR3D(weights=out / "encoder.pt").pretrained  # the evaluation side loads the weights strictly

    # a DDP checkpoint is resumed only by as many processes as wrote it
    with pytest.raises(MribenchError, match="written by 2 process\\(es\\); resume with --nproc 2"):
        pretrain(SimCLRMethod("small", seed=SEED), cohort, steps=6, batch_size=BATCH, seed=SEED, out_dir=out,
                 resume=True, checkpoint_every=2, progress=False)


def test_a_batch_the_processes_cannot_share_is_refused_before_launching(tiny_cohort_dir, tiny_splits_root, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.setenv("MRIBENCH_SPLITS", str(tiny_splits_root))
    code = main(["pretrain", "--encoder", "simclr3d", "--nproc", "2", "--batch-size", "3", "--steps", "1",
                 "--cohort", str(tiny_cohort_dir), "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "--batch-size 3 cannot be shared by --nproc 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
