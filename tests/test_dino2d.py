"""dino2d: brain slices, crops, EMA teacher and centre, a loss that learns, slice-pooled embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.dino2d import (CONFIGS, DINO2D, DINOConfig, DINOMethod, brain_slices, build_vit, class_tokens,
                              random_crops)
from bench.errors import MribenchError

#: a ViT small enough for a 2-core test; the recipe is the same as ``small``'s
TINY = DINOConfig("tiny", "cpu-small", 32, 8, 64, 128, 2, 2, 64)


def _head_phantom(n: int = 4, seed: int = 0, size: int = 64) -> torch.Tensor:
    """(n, 1, size^3) ellipsoid 'heads' with smooth texture and empty top/bottom slices."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.nn.functional.interpolate(torch.randn(n, 1, 8, 8, 8, generator=g), size=(size,) * 3,
                                              mode="trilinear")
    axes = torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij")
    inside = ((axes[0] / 0.8) ** 2 + (axes[1] / 0.9) ** 2 + (axes[2] / 0.7) ** 2 < 1).float()
    return (1 + texture) * inside


def test_brain_slices_skip_empty_axial_slices():
    volume = _head_phantom(1)[0]
    idx = brain_slices(volume)
    assert 0 not in idx and 63 not in idx and 32 in idx
    assert len(idx) < 64


def test_crops_have_the_input_size_and_follow_the_seed():
    slices = torch.rand(3, 1, 64, 64)
    a = random_crops(slices, (0.1, 0.4), 64, np.random.default_rng(5))
    b = random_crops(slices, (0.1, 0.4), 64, np.random.default_rng(5))
    assert a.shape == (3, 1, 64, 64) and torch.equal(a, b)


def test_vit_returns_the_class_token():
    vit = build_vit(CONFIGS["small"]).eval()
    with torch.inference_mode():
        out = class_tokens(vit, torch.rand(2, 1, 64, 64))
    assert out.shape == (2, CONFIGS["small"].hidden)


def test_teacher_is_an_ema_of_the_student_and_the_centre_moves():
    method = DINOMethod(TINY)
    net = method.net
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in net.teacher.parameters()]
    method.loss(_head_phantom(2, size=32), np.random.default_rng(0))
    method.after_step(1, 100)
    m = 1 - (1 - 0.996) * (np.cos(np.pi / 100) + 1) / 2
    for before, t, s in zip(teacher_before, net.teacher.parameters(), net.student.parameters()):
        np.testing.assert_allclose(t.detach().numpy(), m * before.numpy() + (1 - m) * s.detach().numpy(), atol=1e-5)
    assert float(net.centre.abs().sum()) > 0
    assert not any(p.requires_grad for p in net.teacher.parameters())


def test_student_learns_the_teacher_targets_on_a_fixed_batch():
    """The gradient path works: with the teacher held still, the student's cross-entropy falls.

    (With the EMA running, DINO's loss need not fall in a few steps: the teacher sharpens.)
    """
    torch.manual_seed(0)
    method = DINOMethod(TINY)
    opt = torch.optim.AdamW([p for p in method.network().parameters() if p.requires_grad], lr=1e-3)
    batch = _head_phantom(2, size=32)
    losses = []
    for _ in range(8):
        loss = method.loss(batch, np.random.default_rng(0))  # the same slices and crops every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


def test_small_vc_adds_the_regulariser_on_the_global_crops_class_tokens(monkeypatch):
    """``small-vc`` is ``small`` plus var_cov x the variance-covariance term of the student's class
    tokens of the two global crops (2 crops x 2 slices x 2 volumes rows, hidden wide): with the same
    seed, batch and draws the two losses differ by exactly that term, and the card says so."""
    import dataclasses

    from baselines import regularisers

    seen = []

    def fake(h):
        seen.append(tuple(h.shape))
        return torch.tensor(0.5)

    monkeypatch.setattr(regularisers, "variance_covariance", fake)
    batch, losses = _head_phantom(2, size=32), []
    for weight in (0.0, 1.0):
        losses.append(DINOMethod(dataclasses.replace(TINY, var_cov=weight)).loss(batch, np.random.default_rng(0)).item())
    assert seen == [(2 * TINY.slices_per_volume * 2, TINY.hidden)]  # once, for the term that is on
    assert losses[1] == pytest.approx(losses[0] + 0.5, abs=1e-5)
    assert CONFIGS["small-vc"] == dataclasses.replace(CONFIGS["small"], name="small-vc", var_cov=1.0)
    assert "variance-covariance" in DINO2D("small-vc", untrained_ok=True).card.ssl_method
    assert "variance-covariance" not in DINO2D("small", untrained_ok=True).card.ssl_method


def test_volume_embedding_is_the_mean_over_brain_slices_and_deterministic(tmp_path):
    method = DINOMethod("small")
    path = tmp_path / "dino.pt"
    torch.save(method.encoder_state(), path)
    encoder = DINO2D(config="small", weights=path)
    volume = _head_phantom(1)
    with torch.inference_mode():
        a, b = encoder.embed(volume), encoder.embed(volume)
        idx = brain_slices(volume[0])
        by_hand = class_tokens(encoder.net, volume[0, :, :, :, idx].permute(3, 0, 1, 2)).mean(0)
    assert a.shape == (1, 192) and torch.equal(a, b)
    np.testing.assert_allclose(a[0].numpy(), by_hand.numpy(), atol=1e-5)


def test_wrong_weights_are_refused_with_a_listing(tmp_path):
    state = build_vit(CONFIGS["small"]).state_dict()
    state.pop("cls_token")
    path = tmp_path / "dino.pt"
    torch.save(state, path)
    with pytest.raises(MribenchError, match="missing keys: cls_token"):
        DINO2D(config="small", weights=path)


def test_unpretrained_encoder_says_how_to_get_weights(monkeypatch):
    import baselines.recipe as recipe

    monkeypatch.setattr(recipe, "WEIGHTS_DIR", recipe.WEIGHTS_DIR / "nowhere")
    with pytest.raises(MribenchError, match="bench pretrain --encoder dino2d"):
        DINO2D(config="small").embed(torch.zeros(1, 1, 64, 64, 64))
