"""SSL pretraining: pool without evaluated subjects, loss goes down, resume, strict checkpoint loading."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.simclr3d import CONFIGS, SimCLR3D, SimCLRMethod, SimCLRNet, nt_xent
from bench.errors import MribenchError


@pytest.fixture(scope="module")
def smoke():
    from bench.data.sources import open_cohort

    return open_cohort(None, profile="smoke", progress=False)


def test_nt_xent_by_hand():
    # two pairs; identical positives and orthogonal negatives give the textbook value
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    t = 0.5
    # for view 0: positive sim 1/t, negatives: view 1 (0) and view 3 (0); log-softmax over 3 others
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2 * np.exp(0.0)))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_pool_leaves_out_every_evaluated_subject(smoke):
    from bench.paths import repo_root
    from bench.pretrain import pretraining_pool

    pool = set(pretraining_pool(smoke))
    held_out = set()
    for f in (repo_root() / "splits" / smoke.name).glob("*.tsv"):
        t = pd.read_csv(f, sep="\t")
        held_out |= set(t.loc[t.split != "train", "participant_id"])
        assert set(t.loc[t.split == "train", "participant_id"]) <= pool
    assert pool and not (pool & held_out)


@pytest.mark.slow
def interrupted_after_checkpoint(out, step: int, run) -> None:
    """Run ``run()`` and kill it (an exception) as soon as the checkpoint of ``step`` is on disk."""
    from unittest import mock

    import bench.pretrain as module

    real = module.write_pretrain_state

    def write_then_die(path, **kw):
        real(path, **kw)
        if kw["step"] == step:
            raise KeyboardInterrupt("killed")

    with mock.patch.object(module, "write_pretrain_state", write_then_die), pytest.raises(KeyboardInterrupt):
        run()
    assert not (out / "encoder.pt").exists()


def test_pretrain_loss_decreases_resumes_and_card_carries_the_pool(smoke, tmp_path):
    from bench.pretrain import pretrain, pretraining_pool
    from bench.results import load_record
    from bench.runner import Runner
    from dataclasses import replace
    from bench.profiles import get_profile

    out = tmp_path / "run"
    full = pretrain(SimCLRMethod("small"), smoke, steps=12, batch_size=4, lr=3e-4, out_dir=out,
                    checkpoint_every=6, progress=False)
    assert all(np.isfinite(full.losses))
    lines = (out / "loss.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss" and len(lines) == 13
    card = json.loads(full.card_path.read_text())
    assert card["pretraining_data"]["subjects"] == pretraining_pool(smoke)
    assert full.encoder_path.stat().st_size < 20e6

    # killed right after the step-6 checkpoint, resumed to 12: the same losses as one run (the
    # cosine learning rate is a function of the step, so it needs no state of its own)
    part = tmp_path / "part"
    interrupted_after_checkpoint(part, 6, lambda: pretrain(SimCLRMethod("small"), smoke, steps=12, batch_size=4,
                                                           lr=3e-4, out_dir=part, checkpoint_every=6, progress=False))
    resumed = pretrain(SimCLRMethod("small"), smoke, steps=12, batch_size=4, lr=3e-4, out_dir=part,
                       checkpoint_every=6, progress=False, resume=True)
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)
    with pytest.raises(MribenchError, match="already holds a pretraining run"):
        pretrain(SimCLRMethod("small"), smoke, steps=12, out_dir=part, progress=False)

    # the harness uses the weights and flags evaluated subjects that were in the pool
    encoder = SimCLR3D(weights=full.encoder_path)
    assert encoder.card.pretraining_data["subjects"] == card["pretraining_data"]["subjects"]
    from bench.paths import repo_root

    healthy = pd.read_csv(repo_root() / "splits" / smoke.name / "healthy.tsv", sep="\t")  # brain_age's split
    leaked = sorted(healthy.loc[healthy.split == "test", "participant_id"])
    encoder.card.pretraining_data["subjects"] += leaked  # as if the pool had included test subjects
    runner = Runner(smoke, replace(get_profile("smoke"), seeds=1, n_boot=20), tmp_path / "res", progress=False,
                    cache_root=tmp_path / "cache")
    from unittest import mock

    with mock.patch("bench.encoders.get_encoder", lambda spec, **kw: encoder):
        (res,) = runner.run("simclr3d", ["brain_age"], ["linear_probe"])
    record = load_record(res.path)
    evaluated = {p["participant_id"] for p in record.predictions}
    n = len(set(leaked) & evaluated)
    assert n and record.flags == [f"pretraining_overlap: {n} evaluated subject(s) were in the encoder's "
                                  f"pretraining data, e.g. {sorted(set(leaked) & evaluated)[0]}"]
    # ids of another cohort are other people: no flag
    encoder.card.pretraining_data["cohort"] = "synth-default"
    assert encoder.card.overlap(leaked, cohort=smoke.name) == set()
    assert encoder.card.overlap(leaked, cohort="synth-default") == set(leaked)


def test_simclr_loss_decreases_when_training_on_a_batch():
    """The recipe's gradient path works: a few steps on one batch of four brains lower the loss."""

    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 1, 1, 16, 16, 16, generator=g)
    batch = torch.nn.functional.interpolate(base[:, 0], size=(64, 64, 64), mode="trilinear")  # smooth "brains"
    method = SimCLRMethod("small")
    method.training.queue = None  # a filling queue adds negatives each step; this checks the gradient path only
    opt = torch.optim.AdamW(method.network().parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        state = rng.bit_generator.state
        loss = method.loss(batch, rng)
        rng.bit_generator.state = state  # the same views every step: only the weights change
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.05, losses


def _published_layout(config: str, prefix: str = "module.") -> dict:
    """A checkpoint laid out like 3D-Neuro-SimCLR's release (random weights, same keys)."""
    net = SimCLRNet(CONFIGS[config])
    return {"epoch": 3, "model_state_dict": {prefix + k: v for k, v in net.state_dict().items()},
            "optimizer_state_dict": {}}


def test_published_simclr_layout_loads_strictly(tmp_path):
    path = tmp_path / "simclr_3d_brain_foundation.tar"
    ckpt = _published_layout("small")
    torch.save(ckpt, path)
    encoder = SimCLR3D(config="small", weights=path)
    state = {k.removeprefix("module."): v for k, v in ckpt["model_state_dict"].items()}
    for k, v in encoder.module().state_dict().items():
        assert torch.equal(v, state[k]), k
    assert encoder.card.checkpoint_sha256 and encoder.pretrained
    emb = encoder.embed(torch.zeros(1, 1, 64, 64, 64))
    assert emb.shape == (1, 128)


def test_paper_config_matches_the_published_architecture():
    net = SimCLRNet(CONFIGS["paper"])
    keys = net.state_dict()
    assert keys["encoder.conv1.weight"].shape == (64, 1, 7, 7, 7)
    assert net.encoder.conv1.stride == (1, 1, 1)
    assert keys["projector.0.weight"].shape == (512, 512) and keys["projector.2.weight"].shape == (64, 512)
    assert "projector.0.bias" not in keys and not any(k.startswith("encoder.fc") for k in keys)
    assert sum(1 for k in keys if k.endswith("conv1.weight") and k.startswith("encoder.layer")) == 8  # 2-2-2-2


def test_wrong_layout_is_refused_with_a_key_listing(tmp_path):
    ckpt = _published_layout("small")
    ckpt["model_state_dict"] = {k.replace("module.encoder.", "module.backbone."): v
                                for k, v in ckpt["model_state_dict"].items()}
    path = tmp_path / "wrong.tar"
    torch.save(ckpt, path)
    with pytest.raises(MribenchError, match=r"missing keys: encoder\.bn1\..*unexpected keys: backbone\."):
        SimCLR3D(config="small", weights=path)
    torch.save(_published_layout("paper"), path)
    with pytest.raises(MribenchError, match="shape mismatch: encoder.*"):
        SimCLR3D(config="small", weights=path)


def test_unpretrained_encoder_says_how_to_get_weights():
    encoder = SimCLR3D(config="paper")
    with pytest.raises(MribenchError, match="bench pretrain --encoder simclr3d"):
        encoder.embed(torch.zeros(1, 1, 8, 8, 8))


def test_brainiac_lightning_checkpoint_loads_the_backbone_strictly(tmp_path):
    from baselines.simclr_vit3d import CONFIGS as VIT, SimCLRViT3D, SimCLRViTNet

    net = SimCLRViTNet(VIT["small"])
    state = {f"backbone.{k}": v for k, v in net.backbone.state_dict().items()}
    state["projection_head.0.weight"] = torch.zeros(4, 4)  # other parts of the Lightning module are left out
    path = tmp_path / "BrainIAC.ckpt"
    torch.save({"epoch": 9, "global_step": 100, "state_dict": state, "hyper_parameters": {}}, path)
    encoder = SimCLRViT3D(config="small", weights=path)
    for k, v in encoder.module().backbone.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
    assert encoder.embed(torch.zeros(2, 1, 64, 64, 64)).shape == (2, 192)

    torch.save({"state_dict": {k.replace("backbone.", "encoder."): v for k, v in state.items()}}, path)
    with pytest.raises(MribenchError, match=r"no 'backbone\.' keys.*keys: encoder\."):
        SimCLRViT3D(config="small", weights=path)
    bad = dict(state)
    bad.pop("backbone.norm.weight")
    torch.save({"state_dict": bad}, path)
    with pytest.raises(MribenchError, match=r"missing keys: norm\.weight"):
        SimCLRViT3D(config="small", weights=path)


def test_brainiac_paper_config():
    from baselines.simclr_vit3d import CONFIGS as VIT, SimCLRViTNet

    net = SimCLRViTNet(VIT["paper"])
    n = sum(p.numel() for p in net.backbone.parameters())
    assert 85e6 < n < 90e6  # ViT-B at 96^3 / patch 16: 216 patches
    assert net.backbone.patch_embedding.position_embeddings.shape == (1, 216, 768)
    assert len(net.backbone.blocks) == 12


@pytest.mark.parametrize("name", ["simclr3d", "mae3d", "dino2d", "temporal"])
def test_committed_checkpoints_are_used_by_default(name):
    from baselines.recipe import WEIGHTS_DIR
    from bench.encoders import get_encoder
    from bench.encoders.api import file_sha256

    path = WEIGHTS_DIR / f"{name}-small.pt"
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size < 20e6
    assert card["checkpoint_sha256"] == file_sha256(path)
    # re-pretrained on the v2 default cohort's pool (issue 16)
    assert card["pretraining_data"]["cohort"] == "synth-default"
    assert card["pretraining_data"]["wall_time_s"] > 0 and card["pretraining_data"]["volumes_per_s"] > 0
    assert card["pretraining_data"]["command"].startswith(f"bench pretrain --encoder {name} ")
    encoder = get_encoder(name)
    assert encoder.pretrained and encoder.card.checkpoint_sha256 == card["checkpoint_sha256"]
    assert encoder.card.pretraining_data["subjects"] == card["pretraining_data"]["subjects"]
    # the pool holds no subject that a committed synth-default split evaluates
    from bench.paths import repo_root

    for f in (repo_root() / "splits" / card["pretraining_data"]["cohort"]).glob("*.tsv"):
        t = pd.read_csv(f, sep="\t")
        assert not set(t.loc[t.split != "train", "participant_id"]) & set(card["pretraining_data"]["subjects"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino2d", "temporal", "mae3d", "simclr_vit3d"])
def test_every_ssl_baseline_pretrains_from_the_cli_and_its_weights_load(smoke, tmp_path, name):
    """`bench pretrain` end to end for each recipe (two steps on the smoke cohort's pool)."""
    from bench.cli import main
    from bench.encoders import get_encoder
    from bench.pretrain import pretraining_pool

    out = tmp_path / name
    assert main(["pretrain", "--encoder", name, "--profile", "smoke", "--steps", "2", "--batch-size", "2",
                 "--out", str(out), "--no-progress"]) == 0
    losses = pd.read_csv(out / "loss.tsv", sep="\t")["loss"]
    assert len(losses) == 2 and np.isfinite(losses).all()
    card = json.loads((out / "encoder.json").read_text())
    assert card["pretraining_data"]["subjects"] == pretraining_pool(smoke)
    assert card["pretraining_data"]["command"].startswith(f"bench pretrain --encoder {name}")
    encoder = get_encoder(name, weights=out / "encoder.pt")
    assert encoder.checkpoint_hash() == card["checkpoint_sha256"]
    with torch.inference_mode():
        emb = encoder.embed(torch.randn(1, 1, 64, 64, 64))
    assert emb.shape == (1, encoder.card.embed_dim) and torch.isfinite(emb).all()


@pytest.mark.slow
def test_init_from_copies_the_shared_backbone_and_the_card_declares_it(smoke, tmp_path):
    """temporal started from a simclr3d run: the backbone tensors are the simclr3d ones at step 0,
    the heads start fresh, and the card names the source checkpoint and counts its subjects."""
    from bench.cli import main
    from bench.encoders.api import read_state_dict
    from bench.pretrain import warm_start_from
    from bench.splits import file_sha256

    source = tmp_path / "simclr"
    assert main(["pretrain", "--encoder", "simclr3d", "--profile", "smoke", "--steps", "1", "--batch-size", "2",
                 "--out", str(source), "--no-progress"]) == 0
    weights = read_state_dict(source / "encoder.pt")
    from baselines.temporal import TemporalMethod

    net = TemporalMethod("small").network()
    warm = warm_start_from(source / "encoder.pt", net, tmp_path / "probe", 0, "temporal")
    own = net.state_dict()
    assert torch.equal(own["encoder.conv1.weight"], weights["encoder.conv1.weight"])
    assert warm["tensors_loaded"] == sum(k.startswith("encoder.") for k in own) and warm["tensors_fresh"] > 0
    assert warm["checkpoint_sha256"] == file_sha256(source / "encoder.pt") and warm["encoder"] == "simclr3d"

    out = tmp_path / "temporal"
    assert main(["pretrain", "--encoder", "temporal", "--profile", "smoke", "--steps", "1", "--batch-size", "2",
                 "--out", str(out), "--no-progress", "--init-from", str(source / "encoder.pt")]) == 0
    card = json.loads((out / "encoder.json").read_text())["pretraining_data"]
    source_card = json.loads((source / "encoder.json").read_text())["pretraining_data"]
    assert card["init_from"]["checkpoint_sha256"] == file_sha256(source / "encoder.pt")
    assert set(source_card["subjects"]) <= set(card["subjects"])
    assert "--init-from" in card["command"]

    with pytest.raises(MribenchError, match="no tensor of it has the name and shape"):
        warm_start_from(source / "encoder.pt", torch.nn.Linear(2, 2), tmp_path / "other", 0, "toy")


def test_init_from_reads_the_source_card_with_bounds_and_refuses_a_malformed_one(tmp_path):
    """The card beside --init-from weights is untrusted like every card: a malformed pretraining
    block is a one-line error naming the card, before anything is loaded or recorded."""
    from bench.pretrain import warm_start_from

    net = torch.nn.Linear(2, 2)
    weights = tmp_path / "encoder.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps({"name": "toy", "pretraining_data": "everyone"}))
    with pytest.raises(MribenchError, match="encoder.json: the card's 'pretraining_data' is not an object"):
        warm_start_from(weights, torch.nn.Linear(2, 2), tmp_path / "run", 0, "toy")
    weights.with_suffix(".json").write_text(json.dumps({"name": "toy", "pretraining_data": {"subjects": ["s1"]}}))
    (tmp_path / "run").mkdir()
    warm = warm_start_from(weights, torch.nn.Linear(2, 2), tmp_path / "run", 0, "toy")
    assert warm["subjects"] == ["s1"] and warm["tensors_loaded"] == 2 and warm["tensors_fresh"] == 0


def test_init_from_an_encoder_checkpoint_continues_a_recipe_whose_network_wraps_the_encoder(tmp_path, monkeypatch):
    """simclr3d trains a wrapper (``net.encoder...`` beside its queue) while an encoder checkpoint
    holds ``encoder...``: the names are matched in the encoder network instead, so a committed
    checkpoint can be continued (``--init-from baselines/weights/simclr3d-small.pt``); with a
    momentum key network, the key starts from the loaded weights too."""
    import dataclasses

    from baselines import simclr3d
    from bench.pretrain import warm_start_from

    source = simclr3d.SimCLRMethod("small", seed=1)
    weights = tmp_path / "encoder.pt"
    torch.save(source.encoder_state(), weights)
    monkeypatch.setitem(simclr3d.CONFIGS, "small", dataclasses.replace(simclr3d.CONFIGS["small"], momentum=0.99))
    method = simclr3d.SimCLRMethod("small", seed=0)
    net = method.network()
    assert not set(source.encoder_state()) & set(net.state_dict())  # no name in common with the wrapper
    warm = warm_start_from(weights, net, tmp_path / "run", 0, "simclr3d", encoder_net=method.net)
    method.warm_started()
    loaded = net.state_dict()
    for name, tensor in source.encoder_state().items():
        assert torch.equal(loaded[f"net.{name}"], tensor) and torch.equal(loaded[f"key.{name}"], tensor)
    assert warm["tensors_loaded"] == len(source.encoder_state())
    assert warm["tensors_fresh"] == len(loaded) - len(source.encoder_state())  # the key network and the queue


def test_init_from_a_runs_last_checkpoint_continues_its_whole_training_network(tmp_path):
    """A run's ``last.pt`` holds the training network, not only the encoder: --init-from it
    continues everything (for DINO: student, teacher, heads and centre), and the card it declares
    is the run's ``encoder.json``."""
    from baselines.dino2d import DINOConfig, DINOMethod
    from bench.pretrain import warm_start_from, write_pretrain_state

    tiny = DINOConfig("tiny", "cpu-small", 32, 8, 64, 128, 2, 2, 64)
    source = DINOMethod(tiny, seed=1).network()
    with torch.no_grad():
        source.centre.fill_(0.25)
    run = tmp_path / "run"
    run.mkdir()
    write_pretrain_state(run / "last.pt", step=5, network=source.state_dict(), optimiser={}, numpy_rng=
                         np.random.default_rng(0).bit_generator.state, torch_rng=torch.get_rng_state(), losses=[1.0])
    (run / "encoder.json").write_text(json.dumps({"name": "dino2d", "pretraining_data": {"subjects": ["s1"],
                                                                                          "steps": 5}}))
    net = DINOMethod(tiny, seed=0).network()
    warm = warm_start_from(run / "last.pt", net, tmp_path / "next", 0, "dino2d")
    for name, tensor in source.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    assert warm["tensors_fresh"] == 0 and warm["steps"] == 5 and warm["subjects"] == ["s1"]


def test_an_unknown_config_is_a_one_line_error_naming_the_choices(capsys):
    from bench.cli import main

    assert main(["pretrain", "--encoder", "simclr3d", "--config", "nope", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no config 'nope' for simclr3d; available: paper, small" in err
    assert "small-vc" in err


def test_documented_pretraining_runs_keep_their_pool_off_every_evaluated_subject():
    """Every run card under docs/pretraining-v2 (kept or not) names its pool, and no subject of it is
    one a committed split of that cohort evaluates; its command carries no machine path (OUT)."""
    from bench.paths import repo_root

    cards = sorted((repo_root() / "docs" / "pretraining-v2").glob("*/encoder.json"))
    assert len(cards) >= 10
    for path in cards:
        data = json.loads(path.read_text())["pretraining_data"]
        assert data["command"].startswith("bench pretrain --encoder "), path
        assert "--out OUT" in data["command"] and "/tmp" not in data["command"], path
        assert len(data["subjects"]) > 100, path
        for f in (repo_root() / "splits" / data["cohort"]).glob("*.tsv"):
            t = pd.read_csv(f, sep="\t")
            assert not set(t.loc[t.split != "train", "participant_id"]) & set(data["subjects"]), (path, f)
