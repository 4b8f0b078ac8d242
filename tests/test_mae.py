"""mae3d: patch targets in the embedding's token order, a loss that learns, strict weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.mae3d import CONFIGS, MAE3D, MAEMethod, build, patchify
from bench.errors import MribenchError


def test_patchify_follows_the_patch_embedding_token_order():
    net = build(CONFIGS["small"])
    conv = net.patch_embedding.patch_embeddings
    with torch.no_grad():  # channel 0 of the embedding becomes the sum of the patch's voxels
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0] = 1.0
    volume = torch.rand(1, 1, 64, 64, 64)
    embedded = net.patch_embedding(volume) - net.patch_embedding(torch.zeros_like(volume))
    np.testing.assert_allclose(embedded[0, :, 0].detach().numpy(), patchify(volume, 8)[0].sum(-1).numpy(),
                               rtol=1e-4)


def test_masked_reconstruction_loss_decreases_on_a_batch():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = torch.nn.functional.interpolate(torch.randn(4, 1, 8, 8, 8, generator=g), size=(64, 64, 64),
                                            mode="trilinear")
    method = MAEMethod("small")
    opt = torch.optim.AdamW(method.network().parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = method.loss(batch, np.random.default_rng(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_embedding_is_unmasked_and_deterministic():
    encoder = MAE3D(config="small", untrained_ok=True)
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.inference_mode():
        a, b = encoder.embed(x), encoder.embed(x)
    assert a.shape == (2, 192) and torch.equal(a, b)


def test_wrong_weights_are_refused_with_a_listing(tmp_path):
    state = build(CONFIGS["small"]).state_dict()
    state.pop("cls_token")
    path = tmp_path / "mae.pt"
    torch.save(state, path)
    with pytest.raises(MribenchError, match="missing keys: cls_token"):
        MAE3D(config="small", weights=path)


def test_readouts_by_hand():
    """``mean``: last layer's token mean; ``mid``: the same after half the blocks; ``grid``: the
    last layer's tokens averaged per octant of the volume, in the patch embedding's order."""
    from baselines.mae3d import encode

    torch.manual_seed(0)
    net = build(CONFIGS["small"]).eval()
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.no_grad():
        tokens = torch.cat([net.cls_token.expand(2, -1, -1), net.patch_embedding(x)], dim=1)
        half = net.blocks[:3](tokens)
        last = net.blocks[3:](half)[:, 1:]
        assert torch.allclose(encode(net, x, "mean"), last.mean(1), atol=1e-5)
        assert torch.allclose(encode(net, x, "mid"), half[:, 1:].mean(1), atol=1e-5)
        grid = encode(net, x, "grid").reshape(2, 8, -1)
        cube = last.reshape(2, 8, 8, 8, -1)  # tokens on the 8^3 patch grid, (d, h, w)
        assert torch.allclose(grid[:, 0], cube[:, :4, :4, :4].mean((1, 2, 3)), atol=1e-5)
        assert torch.allclose(grid[:, 7], cube[:, 4:, 4:, 4:].mean((1, 2, 3)), atol=1e-5)
        assert torch.allclose(grid[:, 1], cube[:, :4, :4, 4:].mean((1, 2, 3)), atol=1e-5)


def test_readout_sets_the_embed_dim_and_is_part_of_the_cache_key():
    from bench.embeddings import encoder_key
    from bench.encoders import get_encoder

    mean, grid = get_encoder("mae3d@init", readout="mean"), get_encoder("mae3d@init", readout="grid")
    assert (mean.card.embed_dim, grid.card.embed_dim) == (192, 8 * 192)
    assert get_encoder("mae3d@init").config.readout == "mid"  # chosen on val, see the module docstring
    assert encoder_key(mean) != encoder_key(grid)
    with pytest.raises(MribenchError, match="mae3d: unknown read-out 'cls'; choose one of mean, mid, grid"):
        get_encoder("mae3d@init", readout="cls")


def test_small_vc_adds_the_regulariser_on_the_read_out_of_the_unmasked_batch(monkeypatch):
    """``small-vc`` is ``small`` plus var_cov x the variance-covariance term of exactly the vectors
    the probes read (the ``mid`` read-out of the unmasked volumes): with the same seeds (so the same
    patch mask) the two losses differ by that term, computed by hand here."""
    from baselines import regularisers
    from baselines.mae3d import encode

    seen = []
    real = regularisers.variance_covariance

    def spy(h):
        seen.append(h.detach().clone())
        return real(h)

    monkeypatch.setattr(regularisers, "variance_covariance", spy)
    batch = torch.randn(3, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    losses = []
    for name in ("small", "small-vc"):
        method = MAEMethod(name, seed=0)
        torch.manual_seed(5)  # MONAI draws the patch mask from torch's generator
        losses.append(float(method.loss(batch, np.random.default_rng(0)).detach()))
    assert len(seen) == 1 and seen[0].shape == (3, CONFIGS["small"].hidden)
    with torch.no_grad():
        readout = encode(method.net, batch, "mid")
    torch.testing.assert_close(seen[0], readout)
    assert losses[1] == pytest.approx(losses[0] + CONFIGS["small-vc"].var_cov * float(real(readout)), rel=1e-5)
    assert "variance-covariance" in MAE3D("small-vc", untrained_ok=True).card.ssl_method
    assert "variance-covariance" not in MAE3D("small", untrained_ok=True).card.ssl_method
