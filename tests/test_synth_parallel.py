"""The cohort's bytes do not depend on how it is computed: workers (forked processes or threads), or
sampling only where needed.

Issue 31 (item 4) made generation cheaper without changing what it writes: the committed board is
tied to the cohort's hashes, so every file must stay byte-for-byte what the earlier generator wrote.
The reference here is that generator's sampling (one ``grid_sample`` over the whole output grid) on
one worker; the cohort fixture is the current code on its default two workers.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bench.data.synth.anatomy import CHANNELS, load_anatomy
from bench.data.synth.generate import SynthConfig, draw_subjects, generate
from bench.data.synth.render import Renderer
from bench.data.synth.workers import forks, run_each
from tests.conftest import TINY, tree_digest


def full_grid_sample(renderer: Renderer, grid: torch.Tensor) -> torch.Tensor:
    """How the generator sampled the anatomy before issue 31: every channel at every voxel."""
    return F.grid_sample(renderer.source, grid.unsqueeze(0), mode="bilinear", padding_mode="zeros",
                         align_corners=True)[0]


def test_sampling_where_needed_equals_the_full_grid_sample():
    renderer = Renderer(load_anatomy(2), 2)
    subjects = draw_subjects(SynthConfig(seed=3, n_ad=4, n_tumour=3, n_healthy=2), renderer)
    vd = CHANNELS.index("ventricle_distance")
    grids: list[torch.Tensor] = []
    sample = renderer._sample
    renderer._sample = lambda grid: grids.append(grid) or sample(grid)  # type: ignore[method-assign]
    for s in subjects:
        field = renderer.subject_field(s, 3)
        for visit in s.visits:
            new = renderer.warp(s, field, visit.month)
            old = full_grid_sample(renderer, grids[-1])
            brain = old[0] + old[1] + old[2]
            tissue = [i for i in range(len(CHANNELS)) if i != vd]
            assert torch.equal(new[tissue], old[tissue]), s.participant_id
            # the ventricle distance is read only times the brain map: it must match where that is not 0
            assert torch.equal(new[vd][brain != 0], old[vd][brain != 0]), s.participant_id
            assert torch.equal(new[0] + new[1] + new[2], brain)


def test_cohort_bytes_independent_of_workers_and_sampling(tiny_cohort_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Renderer, "_sample", full_grid_sample)
    reference = generate(TINY, tmp_path / "reference", workers=1, progress=False)
    assert tree_digest(reference) == tree_digest(tiny_cohort_dir)


def test_piped_generation_prints_progress_lines(tmp_path, capsys):
    small = dataclasses.replace(TINY, n_ad=2, n_tumour=2, n_healthy=0)
    generate(small, tmp_path / "small", progress=True)
    err = capsys.readouterr().err
    assert "[progress] synth: rendering scans" in err
    assert "\x1b[" not in err  # plain lines, no terminal control codes


def _square_plus(offset: int, item: int) -> int:
    if item == 3:
        raise ValueError("item 3 fails")
    return item * item + offset


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_tasks_return_in_order_and_share_the_parent_objects(workers):
    with run_each(_square_plus, (10,), [2, 0, 5, 1], workers) as done:
        assert list(done) == [(2, 14), (0, 10), (5, 35), (1, 11)]


def test_a_failing_worker_task_raises_its_own_error_and_the_rest_are_cancelled():
    with pytest.raises(ValueError, match="item 3 fails"):
        with run_each(_square_plus, (0,), [1, 3] + list(range(100, 400)), 2) as done:
            assert next(done) == (1, 1)
            list(done)


def test_two_workers_are_forked_processes_on_linux_except_in_a_daemonic_process(monkeypatch):
    import multiprocessing
    import sys

    assert forks() == sys.platform.startswith("linux")
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert not forks()  # a Dask worker's process may not have children: threads there
