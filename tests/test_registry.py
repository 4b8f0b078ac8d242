"""The declared objects: the generic registry, encoder capabilities and card flags, heads, kinds,
protocols (issue 18: one place for each fact)."""

from __future__ import annotations

import sys

import pytest

from bench.errors import MribenchError
from bench.registry import Registry


def test_registry_entries_are_lazy_named_once_and_frozen():
    reg = Registry("thing")
    reg.register("json", "json:dumps")                  # a reference: nothing imported yet
    assert reg.reference("json") == "json:dumps"
    assert reg["json"] is __import__("json").dumps and reg.reference("json") is None
    reg.register("json", reg["json"])                   # the same object again: fine
    with pytest.raises(MribenchError, match="already registered"):
        reg.register("json", "json:loads")

    @reg.register("double")
    def double(x):
        return 2 * x

    assert list(reg) == ["json", "double"] and reg["double"](2) == 4 and "double" in reg
    with pytest.raises(MribenchError, match="unknown thing 'nope'; choose from json, double"):
        reg.lookup("nope")
    reg.freeze()
    with pytest.raises(MribenchError, match="frozen"):
        reg.register("more", len)


def test_spaces_metrics_importers_kinds_and_protocols_are_registries():
    from bench.data.importers import DATASETS, IMPORTERS
    from bench.data.spaces import SPACES
    from bench.kinds import KINDS
    from bench.metrics import METRICS
    from bench.protocols import PROTOCOLS

    for reg in (SPACES, METRICS, IMPORTERS, KINDS, PROTOCOLS):
        assert isinstance(reg, Registry)
    assert DATASETS == ("adni", "oasis3", "ixi", "brats", "ucsf-pdgm")
    assert IMPORTERS.reference("ucsf-pdgm") in (None, "bench.data.importers.ucsf_pdgm:import_ucsf_pdgm")
    assert "cpu-small" in SPACES and METRICS["auc"].higher_is_better


def test_the_encoder_registry_reads_the_baselines_from_entry_points_only():
    import bench.encoders.api as api

    assert "baselines" not in api.__dict__
    refs = {name: api.ENCODERS.reference(name) for name in ("random", "simclr3d", "oracle")}
    assert all(r is None or r.startswith("baselines.") for r in refs.values())
    from bench.encoders import list_encoders

    names = list_encoders()
    assert {"random", "oracle", "volumes", "intensity", "supervised", "features", "simclr3d", "simclr3d@init",
            "temporal@init"} <= set(names)


#: Card flags and capabilities of every baseline, as their cards stated them before capabilities
#: existed (so deriving the flags changes no card, hence no weights hash of a card-only encoder).
EXPECTED = {  # name: (supports_finetune, supports_segmentation, latent, feature maps, label maps, sequence, trainable)
    "random": (True, True, False, True, False, False, True),
    "supervised": (True, True, False, True, False, False, True),
    "oracle": (False, True, True, False, True, False, False),
    "volumes": (False, False, True, False, False, False, False),
    "intensity": (False, False, False, False, False, False, False),
    "simclr3d@init": (True, True, False, True, False, False, True),
    "simclr_vit3d@init": (True, False, False, False, False, False, True),
    "mae3d@init": (False, False, False, False, False, False, True),
    "dino2d@init": (False, False, False, False, False, False, True),
    "temporal@init": (True, True, False, True, False, True, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capabilities_and_card_flags_of_the_baselines(name):
    from bench.encoders import get_encoder
    from bench.encoders.api import capabilities

    encoder = get_encoder(name)
    caps = capabilities(encoder)
    got = (encoder.card.supports_finetune, encoder.card.supports_segmentation, caps.latent, caps.feature_maps,
           caps.label_maps, caps.sequence, caps.trainable)
    assert got == EXPECTED[name]
    assert caps.finetune_only == (name == "supervised")


def test_unstated_card_flags_are_derived_and_always_written_as_booleans():
    import torch

    from bench.encoders.api import Encoder, EncoderCard, derive_card_flags

    card = EncoderCard(name="x", architecture="a", n_parameters=0, embed_dim=2, input_space="cpu-small",
                       ssl_method="none")
    assert card.model_dump(mode="json")["supports_finetune"] is False   # unstated: written as false

    class Maps(Encoder):
        def __init__(self):
            self.card = card

        def feature_maps(self, volumes):
            return [volumes]

        def module(self):
            return torch.nn.Identity()

    enc = Maps()
    derive_card_flags(enc)
    assert enc.card.supports_segmentation is True and enc.card.supports_finetune is True
    declined = Maps()
    declined.card = card.model_copy(update={"supports_finetune": False})
    derive_card_flags(declined)
    assert declined.card.supports_finetune is False                    # a stated flag wins


def test_every_head_is_a_head():
    import numpy as np

    from bench import heads
    from bench.kinds import KINDS
    from bench.tasks import get_task

    for name in ("ad_diagnosis", "brain_age", "tumour_survival"):
        spec = get_task(name)
        head = KINDS[spec.target.name].probe_head(spec, 0)
        assert isinstance(head, heads.Head) and isinstance(head.uses_seed, bool)
    seq = heads.SequenceHead(lambda: heads.RidgeHead(), 1)
    assert isinstance(seq, heads.Head)
    assert not isinstance(np.zeros(1), heads.Head)


def test_sequence_classification_is_a_classification_over_a_sequence():
    from bench.kinds import KINDS
    from bench.tasks import get_task

    spec = get_task("conversion")
    assert spec.target is KINDS["classification"] and spec.is_sequence
    assert get_task("tumour_segmentation").target.trains_network
    with pytest.raises(MribenchError, match="unknown target kind"):
        from bench.kinds import target_kind

        target_kind("ordinal")


def test_protocols_say_where_they_apply_in_one_place():
    from bench.encoders import get_encoder
    from bench.protocols import PROTOCOLS, get_protocol
    from bench.tasks import get_task

    oracle, random = get_encoder("oracle"), get_encoder("random")
    assert get_protocol("few_shot").supports(get_task("brain_age"), oracle) == \
        "few-shot needs class labels; brain_age is regression"
    assert "reads latents" in get_protocol("robustness").supports(get_task("ad_diagnosis"), oracle)
    assert "does not support fine-tuning" in get_protocol("finetune").supports(get_task("brain_age"), oracle)
    assert get_protocol("finetune").supports(get_task("brain_age"), random) is None
    assert get_protocol("linear_probe").supports(get_task("tumour_segmentation"), oracle) is None
    assert "feature maps" in get_protocol("linear_probe").supports(get_task("tumour_segmentation"),
                                                                   get_encoder("volumes"))
    assert [p for p in PROTOCOLS if get_protocol(p).ranked] == ["linear_probe", "fractions", "few_shot", "finetune",
                                                                 "robustness", "finetune_fractions"]
    assert {p: get_protocol(p).headline for p in PROTOCOLS} == {
        "linear_probe": "full", "fractions": "fraction=1", "few_shot": "k=10", "finetune": "full",
        "robustness": "clean", "cross_cohort": "full", "finetune_fractions": "fraction=1", "reliability": "retest",
        "site": "site"}
    assert "compares two acquisitions of one scan" in get_protocol("reliability").supports(get_task("conversion"),
                                                                                          random)
    assert get_protocol("reliability").supports(get_task("brain_age"), oracle) is None
    assert get_protocol("reliability").main_metric(get_task("brain_age")) == ("icc", True)
    assert "embedding tasks only" in get_protocol("finetune_fractions").supports(get_task("tumour_segmentation"),
                                                                                 random)


def test_settings_of_old_records_are_read_from_their_labels():
    from bench.protocols import get_protocol
    from bench.results import SettingScore

    old = SettingScore(setting="fraction=0.1", seed=0, split="test", metrics={}, n_subjects=1, n_examples=1)
    assert get_protocol("fractions").params_of(old) == {"fraction": 0.1}
    shot = SettingScore(setting="k=5", seed=1, split="test", metrics={}, n_subjects=1, n_examples=1)
    assert get_protocol("few_shot").params_of(shot) == {"k": 5}
    rob = SettingScore(setting="gibbs@3", seed=0, split="test", metrics={}, n_subjects=1, n_examples=1)
    assert get_protocol("robustness").params_of(rob) == {"perturbation": "gibbs", "severity": 3}


def test_importing_the_harness_imports_no_baseline():
    import subprocess

    code = ("import sys, bench.cli, bench.runner, bench.leaderboard.board, bench.protocols.context, bench.encoders; "
            "from bench.protocols import all_protocols; all_protocols(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'baselines'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
