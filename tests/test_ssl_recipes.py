"""Mechanics of the SSL recipe changes: the memory queue of simclr3d's small config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.simclr3d import ProjectionQueue, SimCLRMethod, nt_xent


def test_queue_is_a_fifo_of_normalised_projections():
    q = ProjectionQueue(size=5, dim=2)
    assert len(q.negatives()) == 0
    q.push(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    assert torch.allclose(q.negatives(), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    q.push(torch.arange(1, 9, dtype=torch.float32).reshape(4, 2))  # 6 pushed into 5 slots
    assert len(q.negatives()) == 5 and int(q.head) == 1
    # the oldest row (slot 0) was overwritten by the newest
    assert torch.allclose(q.items[0], nn.functional.normalize(torch.tensor([7.0, 8.0]), dim=0))


def test_queue_rows_are_extra_negatives_in_nt_xent():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    queue = nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    t = 0.5
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = torch.cat([z @ z.T / t, z @ queue.T / t], dim=1)
    logits[torch.arange(6), torch.arange(6)] = float("-inf")
    target = torch.tensor([3, 4, 5, 0, 1, 2])
    expected = nn.functional.cross_entropy(logits, target)
    assert torch.allclose(nt_xent(z1, z2, t, queue), expected)
    assert nt_xent(z1, z2, t, queue) > nt_xent(z1, z2, t)  # more negatives, higher loss
    assert torch.allclose(nt_xent(z1, z2, t, queue[:0]), nt_xent(z1, z2, t))


def test_recipe_fills_the_queue_and_resumes_it_from_its_state():
    method = SimCLRMethod("small", seed=0)
    assert method.config.queue_size > 0
    state = method.network().state_dict()
    assert "queue.items" in state and "net.encoder.conv1.weight" in state
    assert set(method.encoder_state()) == set(method.net.state_dict())  # the queue is not the encoder's
    batch = torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    import numpy as np
    method.loss(batch, np.random.default_rng(0))
    assert int(method.network().queue.filled) == 4
    again = SimCLRMethod("small", seed=0)
    again.network().load_state_dict(method.network().state_dict())
    assert torch.equal(again.network().queue.negatives(), method.network().queue.negatives())


def test_cosine_schedule_warms_up_peaks_and_decays_to_zero():
    import pytest

    from bench.errors import MribenchError
    from bench.pretrain import learning_rate

    steps, peak = 200, 1e-3  # warm-up = 5 % of 200 = 10 steps
    rates = [learning_rate(s, steps, peak) for s in range(1, steps + 1)]
    assert rates[0] == pytest.approx(peak / 10)          # step 1 of a 10-step linear warm-up
    assert rates[9] == pytest.approx(peak)                # the peak at the warm-up's end
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)     # zero at the last step
    # halfway through the decay, cos(pi/2) = 0: half the peak
    assert learning_rate(10 + 95, steps, peak) == pytest.approx(peak / 2)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # monotone after the warm-up
    assert learning_rate(123, steps, peak, "constant") == peak
    with pytest.raises(MribenchError, match="unknown learning-rate schedule 'step'"):
        learning_rate(1, steps, peak, "step")


def _ball(shape=(40, 48, 40), radius=9.0) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) - n / 2 for n in shape],
                                      indexing="ij"))
    return ((grid ** 2).sum(0) <= radius ** 2).float()[None]


def test_anatomy_views_keep_the_size_of_a_structure_that_resized_crops_change():
    """simclr3d's small config uses rigid views: a ball keeps its volume in every view, while
    the paper's random resized crops rescale it (the size the synthetic tasks measure)."""
    import dataclasses

    import numpy as np

    from baselines.simclr3d import CONFIGS, make_views

    ball = _ball()
    true_volume = float(ball.sum())
    small = dataclasses.replace(CONFIGS["small"], views="anatomy")
    rng = np.random.default_rng(0)

    def volumes(config) -> list[float]:
        views = make_views(config, tuple(ball.shape[1:]))
        out = []
        for _ in range(8):
            views.set_random_state(seed=int(rng.integers(0, 2 ** 31 - 1)))
            v = torch.as_tensor(views(ball.clone()))
            # intensity jitter moves values; the ball is where the view is above half its range
            lo, hi = float(v.min()), float(v.max())
            out.append(float((v > lo + (hi - lo) / 2).sum()))
        return out

    rigid = volumes(small)
    assert max(abs(v / true_volume - 1) for v in rigid) < 0.1  # bias field and noise move the edge a little
    resized = volumes(dataclasses.replace(small, views="crop_resize", min_crop=(24, 28, 24)))
    assert max(abs(v / true_volume - 1) for v in resized) > 0.3


def test_unknown_views_are_refused_with_the_choices():
    import dataclasses

    import pytest

    from baselines.simclr3d import CONFIGS, make_views
    from bench.errors import MribenchError

    with pytest.raises(MribenchError, match="unknown SimCLR views 'zoom'.*crop_resize, anatomy"):
        make_views(dataclasses.replace(CONFIGS["small"], views="zoom"), (8, 8, 8))


def test_info_nce_by_hand():
    """Each query's positive is its own key; other keys and the queue are negatives."""
    from baselines.simclr3d import info_nce

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    queue = torch.tensor([[0.6, 0.8]])
    t = 0.5
    # query 0 (1, 0): positive 1/t, other key 0, queue 0.6/t; query 1 (0, 1): positive 1/t, other 0, queue 0.8/t
    expected = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(1.2))),
                        -np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(1.6)))])
    assert float(info_nce(q, k, t, queue)) == pytest.approx(expected, rel=1e-6)


def test_momentum_key_network_follows_the_online_one_and_fills_the_queue(monkeypatch):
    """With ``momentum`` the key network is an EMA of the online network that the optimiser never
    touches; the queue receives the keys, and everything is in the state a resume restores."""
    import dataclasses

    from baselines import simclr3d

    assert simclr3d.CONFIGS["small"].momentum == 0  # tried, not kept (see the note on CONFIGS)
    monkeypatch.setitem(simclr3d.CONFIGS, "small", dataclasses.replace(simclr3d.CONFIGS["small"], momentum=0.99,
                                                                     views="anatomy"))
    method = SimCLRMethod("small", seed=0)
    training = method.network()
    assert training.key is not None
    assert not any(p.requires_grad for p in training.key.parameters())
    assert any(k.startswith("key.") for k in training.state_dict())
    name, online = next(iter(training.net.named_parameters()))
    before = dict(training.key.named_parameters())[name].detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    method.after_step(1, 10)
    after = dict(training.key.named_parameters())[name]
    assert torch.allclose(after, 0.99 * before + 0.01 * online.detach(), atol=1e-6)

    batch = torch.randn(2, 1, 32, 32, 32)
    loss = method.loss(batch, np.random.default_rng(0))
    assert torch.isfinite(loss) and int(training.queue.filled) == 4
    loss.backward()
    assert all(p.grad is None for p in training.key.parameters())


def test_variance_and_covariance_terms_by_hand():
    from baselines.regularisers import COVARIANCE_WEIGHT, covariance_term, variance_covariance, variance_term

    # column 0: values 0, 2 -> unbiased var 2, std > 1, no penalty; column 1: constant -> std sqrt(1e-4) = 0.01,
    # penalty 1 - 0.01 = 0.99; mean over the two columns 0.495
    h = torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    assert variance_term(h).item() == pytest.approx(0.495, abs=1e-6)
    # rows (1, 1) and (-1, -1): cov = [[2, 2], [2, 2]] (n - 1 = 1); off-diagonal 2 and 2 -> (4 + 4) / d=2 = 4
    g = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert covariance_term(g).item() == pytest.approx(4.0)
    # decorrelated columns with std above 1 cost nothing
    free = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    assert variance_covariance(free).item() == pytest.approx(0.0, abs=1e-7)
    assert variance_covariance(g).item() == pytest.approx(variance_term(g).item() + COVARIANCE_WEIGHT * 4.0)
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        variance_covariance(h[:1])


def test_the_regulariser_spreads_a_collapsed_batch():
    """Gradient steps on the regulariser alone take a batch folded onto one direction to one whose
    variance spans the dimensions: the mechanism against the collapse round 1 measured."""
    from baselines.regularisers import variance_covariance

    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 16, generator=gen)
    h = (0.1 * torch.randn(32, 1, generator=gen) * direction + 0.01 * torch.randn(32, 16, generator=gen)).requires_grad_()

    def top_share(x):
        s = torch.linalg.svdvals(x - x.mean(0)) ** 2
        return (s[0] / s.sum()).item()

    before = top_share(h.detach())
    opt = torch.optim.SGD([h], lr=2.0)
    for _ in range(1000):
        opt.zero_grad()
        variance_covariance(h).backward()
        opt.step()
    assert before > 0.95 and top_share(h.detach()) < 0.25
    assert h.detach().std(0).min().item() > 0.9


def _regulariser_inputs(monkeypatch) -> list[tuple[int, ...]]:
    """Replace the variance-covariance regulariser by a constant 0.25; the shapes it is called on
    land in the returned list."""
    from baselines import regularisers

    seen = []

    def fake(h):
        seen.append(tuple(h.shape))
        return torch.tensor(0.25)

    monkeypatch.setattr(regularisers, "variance_covariance", fake)
    return seen


def test_small_vc_adds_the_regulariser_on_the_pooled_embeddings_to_nt_xent(monkeypatch):
    """``small-vc`` is ``small`` plus var_cov x the regulariser of both views' backbone outputs: with
    the same seed, batch and views the two losses differ by exactly that term."""
    from baselines import simclr3d

    seen = _regulariser_inputs(monkeypatch)
    batch = torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = SimCLRMethod("small", seed=0).loss(batch, np.random.default_rng(0))
    vc = SimCLRMethod("small-vc", seed=0)
    regularised = vc.loss(batch, np.random.default_rng(0))
    assert seen == [(4, vc.config.widths[-1])]  # 2 volumes x 2 views, the pooled (probed) embedding
    assert regularised.item() == pytest.approx(plain.item() + vc.config.var_cov * 0.25, abs=1e-6)
    assert "VICReg variance-covariance" in simclr3d.ssl_method_of(vc.config)


def test_simclr_vit3d_small_vc_adds_the_queue_and_the_regulariser_on_the_first_token(monkeypatch):
    """simclr_vit3d's ``small-vc`` is v1's ``small`` with simclr3d's round-3 changes and nothing else:
    the same seeded network, a 512-projection queue (empty at the first step, so that step's NT-Xent
    is v1's; both views' projections then enter it) and var_cov x the regulariser on both views'
    first tokens, the token pretraining projects."""
    import dataclasses

    from baselines.simclr_vit3d import CONFIGS, VIEW_CONFIGS, SimCLRViT3D, SimCLRViTMethod

    seen = _regulariser_inputs(monkeypatch)
    batch = torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    v1 = SimCLRViTMethod("small", seed=0)
    vc = SimCLRViTMethod("small-vc", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(v1.net.state_dict().values(), vc.net.state_dict().values()))
    plain = v1.loss(batch, np.random.default_rng(0))
    regularised = vc.loss(batch, np.random.default_rng(0))
    assert seen == [(4, CONFIGS["small-vc"].hidden)]  # 2 volumes x 2 views, the first token
    assert regularised.item() == pytest.approx(plain.item() + vc.config.var_cov * 0.25, abs=1e-6)
    assert v1.training.queue is None and len(vc.training.queue.negatives()) == 4
    assert VIEW_CONFIGS["small-vc"] == dataclasses.replace(VIEW_CONFIGS["small"], name="small-vc",
                                                           queue_size=512, var_cov=1.0)
    assert "variance-covariance term x 1 on the first token" in SimCLRViT3D("small-vc", untrained_ok=True).card.ssl_method


def test_simclr_vit3d_small_reads_the_mean_token_and_pretrains_on_the_first():
    """``small``'s encoder embeds a volume as the mean of the last layer's tokens (chosen on val);
    pretraining still projects the first token, as the committed run did, so its card's command
    reproduces it; ``readout=first`` gives BrainIAC's read-out of the same weights."""
    from baselines.simclr_vit3d import SimCLRViT3D, SimCLRViTMethod
    from bench.errors import MribenchError

    x = torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(2))
    mean, first = SimCLRViT3D("small", weights="init"), SimCLRViT3D("small", weights="init", readout="first")
    with torch.no_grad():
        tokens, _ = mean.net.backbone(x)
        assert torch.allclose(mean.embed(x), tokens.mean(dim=1), atol=1e-6)
        assert torch.allclose(first.embed(x), tokens[:, 0], atol=1e-6)
        recipe = SimCLRViTMethod("small-vc", seed=0)
        recipe.net.load_state_dict(mean.net.state_dict())
        assert torch.allclose(recipe.net(x), tokens[:, 0], atol=1e-6)
    assert "mean token" in mean.card.architecture and "first token" in first.card.architecture
    with pytest.raises(MribenchError, match="simclr_vit3d: unknown read-out 'cls'; choose one of first, mean"):
        SimCLRViT3D("small", weights="init", readout="cls")
