"""temporal: subject sequences in time order, 1..n scans, causal summaries, a loss that learns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.temporal import (CONFIGS, TemporalConfig, TemporalMethod, TemporalNet, TemporalSSL,
                                draw_sequences, pad_sequences, time_encoding)
from bench.errors import MribenchError


def _rows() -> pd.DataFrame:
    """Three subjects: one with a single session (unusable), two with 3 and 4 sessions."""
    data = [("sub-A", 0.0), ("sub-B", 0.0), ("sub-B", 12.0), ("sub-B", 30.0),
            ("sub-C", 0.0), ("sub-C", 6.0), ("sub-C", 18.0), ("sub-C", 40.0)]
    return pd.DataFrame({"participant_id": [s for s, _ in data], "months_from_baseline": [m for _, m in data],
                         "path": [f"{s}@{m:g}" for s, m in data]})


def _load(path: str) -> np.ndarray:
    """A fake volume that remembers its month in every voxel."""
    return np.full((8, 8, 8), float(path.split("@")[1]), np.float32)


def test_sequences_are_prefixes_in_time_order_with_a_later_target():
    rows = _rows()
    for seed in range(20):
        batch = draw_sequences(rows, _load, np.random.default_rng(seed), batch_size=8, max_context=3)
        assert len(batch.context) == 2  # sub-A has one session: never drawn
        for ctx, months, target, t_month in zip(batch.context, batch.context_months, batch.target,
                                                batch.target_months):
            assert 1 <= len(ctx) <= 3
            assert np.all(np.diff(months) > 0) and months[-1] < t_month
            # the volumes at those indices are the scans of those months
            assert [float(batch.volumes[i, 0, 0, 0, 0]) for i in ctx] == list(months)
            assert float(batch.volumes[target, 0, 0, 0, 0]) == t_month


def test_too_few_longitudinal_subjects_is_an_error():
    rows = _rows()[lambda t: t.participant_id != "sub-C"]
    with pytest.raises(MribenchError, match="at least 2 subjects with 2 or more sessions"):
        draw_sequences(rows, _load, np.random.default_rng(0), 4, 3)


def test_padding_puts_each_sequence_first_with_years_to_its_last_scan():
    z = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    seq, years, pad = pad_sequences(z, [[0], [1, 2, 3]], [np.array([5.0]), np.array([0.0, 12.0, 18.0])])
    assert seq.shape == (2, 3, 3) and pad.tolist() == [[False, True, True], [False, False, False]]
    assert years[1].tolist() == pytest.approx([-1.5, -0.5, 0.0]) and years[0, 0] == 0
    assert seq[1, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_time_encoding_separates_gaps_from_a_quarter_to_decades():
    enc = time_encoding(torch.tensor([0.0, 0.25, 0.5, 3.0, 10.0]), 16)
    assert enc.shape == (5, 16)
    d = torch.cdist(enc, enc)
    assert (d + torch.eye(5) * 99).min() > 0.1  # every pair of gaps is told apart


@pytest.fixture(scope="module")
def encoder() -> TemporalSSL:
    return TemporalSSL(config="small", untrained_ok=True)


@pytest.mark.parametrize("length", [1, 2, 3, 5])
def test_sequence_features_accept_one_to_n_scans(encoder, length):
    z = np.random.default_rng(length).normal(size=(length, 128)).astype(np.float32)
    months = np.cumsum(np.r_[0, np.random.default_rng(0).uniform(3, 24, length - 1)])
    out = encoder.sequence_features(z, months)
    d = CONFIGS["small"].sequence_dim
    assert out.shape == (length, 128 + d) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, :128], z)  # the scan's own embedding comes first


def test_summaries_are_causal_and_time_aware(encoder):
    z = np.random.default_rng(1).normal(size=(4, 128)).astype(np.float32)
    months = np.array([0.0, 6.0, 18.0, 30.0])
    full = encoder.sequence_features(z, months)
    prefix = encoder.sequence_features(z[:2], months[:2])
    np.testing.assert_allclose(full[:2], prefix, atol=1e-5)  # a later scan never changes an earlier summary
    stretched = encoder.sequence_features(z, months * 3)     # same scans, longer gaps
    assert np.abs(stretched[-1, 128:] - full[-1, 128:]).max() > 1e-3


def test_harness_appends_summaries_only_for_sequence_tasks(encoder):
    from types import SimpleNamespace

    from bench.protocols.context import with_sequence_summaries

    feats = [np.ones((2, 128), np.float32), np.ones((1, 128), np.float32)]
    seq = SimpleNamespace(spec=SimpleNamespace(is_sequence=True), months=[np.array([0.0, 12.0]), np.array([0.0])])
    out = with_sequence_summaries(seq, feats, encoder)
    assert [f.shape for f in out] == [(2, 192), (1, 192)]
    flat = SimpleNamespace(spec=SimpleNamespace(is_sequence=False), months=seq.months)
    assert with_sequence_summaries(flat, feats, encoder) is feats
    assert with_sequence_summaries(seq, feats, object()) is feats  # encoders without a sequence model


def test_order_and_contrastive_loss_decrease_on_a_fixed_batch():
    """Brains whose 'ventricle' grows with time: a few steps teach which scan came first."""
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 24)] * 3, indexing="ij")).norm(dim=0)
    rows, volumes = [], {}
    for s in range(4):
        for k, month in enumerate([0.0, 12.0, 24.0]):
            radius = 0.2 + 0.05 * s + 0.08 * k
            path = f"sub-{s}@{month:g}"
            volumes[path] = (grid > radius).float().numpy() * (grid < 0.9).float().numpy()
            rows.append(("sub-%d" % s, month, path))
    table = pd.DataFrame(rows, columns=["participant_id", "months_from_baseline", "path"])
    method = TemporalMethod(TemporalConfig("tiny", (8, 16, 16, 32), 2, "cpu-small", sequence_dim=16))
    opt = torch.optim.AdamW(method.network().parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        rng = np.random.default_rng(0)  # the same batch, views and order every step
        batch = method.draw_batch(table, volumes.__getitem__, rng, batch_size=4)
        loss = method.loss(batch, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses


def test_small_vc_adds_the_regulariser_on_every_scans_embedding(monkeypatch):
    """``small-vc`` is ``small`` plus var_cov x the variance-covariance term of the backbone
    embeddings of all the batch's scans (prefixes and later scans): with the same seed, batch and
    draws the two losses differ by exactly that term."""
    from baselines import regularisers

    seen = []

    def fake(h):
        seen.append(tuple(h.shape))
        return torch.tensor(0.5)

    monkeypatch.setattr(regularisers, "variance_covariance", fake)
    grid = torch.linspace(0, 1, 32)
    volumes = {f"sub-{s}@{m:g}": (grid[:, None, None] * (1 + s + m / 12)).expand(32, 32, 32).numpy()
               for s in range(3) for m in (0.0, 12.0, 24.0)}
    table = pd.DataFrame([(p.split("@")[0], float(p.split("@")[1]), p) for p in volumes],
                         columns=["participant_id", "months_from_baseline", "path"])
    losses = []
    for name in ("small", "small-vc"):
        method = TemporalMethod(name, seed=0)
        rng = np.random.default_rng(3)
        batch = method.draw_batch(table, volumes.__getitem__, rng, batch_size=3)
        losses.append(method.loss(batch, rng).item())
    n_scans = len(batch.volumes)
    assert seen == [(n_scans, CONFIGS["small-vc"].widths[-1])]  # once, for small-vc only
    assert losses[1] == pytest.approx(losses[0] + CONFIGS["small-vc"].var_cov * 0.5, abs=1e-5)
    assert "variance-covariance" in TemporalSSL("small-vc", untrained_ok=True).card.ssl_method
    assert "variance-covariance" not in TemporalSSL("small", untrained_ok=True).card.ssl_method


def test_wrong_weights_are_refused_with_a_listing(tmp_path):
    state = TemporalNet(CONFIGS["small"]).state_dict()
    state.pop("order_head.0.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "temporal.pt"
    torch.save(state, path)
    with pytest.raises(MribenchError, match="order_head.0.weight") as err:
        TemporalSSL(config="small", weights=path)
    assert "extra.weight" in str(err.value)
