"""The init floor: each SSL encoder at its own seeded random initialisation (issue: reference
encoders that learn). Same architecture, embed dim and read-out as the pretrained encoder,
different weights, a name of its own, and no pretraining data claimed."""

from __future__ import annotations

import pytest
import torch

from bench.pretrain import ssl_recipes
from bench.encoders import get_encoder
from bench.encoders.api import weights_sha256


@pytest.mark.parametrize("name", sorted(ssl_recipes()))
def test_init_floor_matches_architecture_and_differs_in_weights(name):
    pretrained = get_encoder(name)
    floor = get_encoder(f"{name}@init")
    assert floor.card.name == f"{name}@init"
    assert floor.card.architecture == pretrained.card.architecture
    assert floor.card.embed_dim == pretrained.card.embed_dim
    assert floor.card.n_parameters == pretrained.card.n_parameters
    assert floor.card.pretraining_data == {"cohort": None, "subjects": []}
    assert floor.card.checkpoint_sha256 is None and pretrained.card.checkpoint_sha256
    assert type(floor.module()) is type(pretrained.module())
    assert weights_sha256(floor) != weights_sha256(pretrained)


def test_init_floor_is_seeded_and_the_same_as_weights_init():
    a, b = get_encoder("simclr3d@init"), get_encoder("simclr3d", weights="init")
    assert b.card.name == "simclr3d@init"
    x = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ea, eb = a.embed(x), b.embed(x)
        ep = get_encoder("simclr3d").embed(x)
    assert torch.equal(ea, eb)  # one seeded initialisation
    assert ea.shape == ep.shape and not torch.allclose(ea, ep)


@pytest.mark.parametrize("name", sorted(ssl_recipes()))
def test_committed_checkpoint_embeddings_are_not_constant(name):
    """A collapsed SSL run embeds every scan alike; such a checkpoint must never be committed.
    Four different smooth volumes must spread over the embedding (relative spread well above
    float noise), as they do at the init."""
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool3d(torch.randn(4, 1, 64, 64, 64, generator=gen), 5, stride=1, padding=2)
    x = (x - x.mean()) / x.std()
    with torch.no_grad():
        emb = get_encoder(name).embed(x).double()
    spread = emb.std(dim=0).mean() / emb.abs().mean().clamp_min(1e-12)
    assert torch.isfinite(emb).all() and spread > 1e-3, f"{name}: embeddings nearly constant (spread {spread:.2e})"
