"""Where does the synthetic cohort's rendering spend its CPU? The operations the bytes pin, and the rest.

Issue 31 (item 4) asks for the default cohort in at most 3 minutes on 2 cores, with every file
byte-for-byte what the committed board was run on. Byte identity pins every floating-point
operation of the renderer in kind and order (a changed rounding moves voxels across an int16
boundary), so the question a speed-up has to answer is how much of the CPU goes to operations whose
cost is fixed by that: sampling the anatomy (``grid_sample``), trilinear upsampling of the random
fields (``interpolate``), the Gaussian noise draws (numpy's generator), the scanner's blur
(``gaussian_filter``), and writing the NIfTI files (gzip level 1, which nibabel's bytes fix). The
rest is the formula's elementwise arithmetic and matrix products, the part this issue already made
cheaper (in place, no broadcasting of 3-vectors, numpy's ``flatnonzero``).

This renders every ``--every``-th subject of a profile (its planned rescans included) on one thread
in this process, timing each of those operations with the thread's CPU clock, and reports seconds
and shares. Usage::

    python benchmarks/generation_breakdown.py [--profile default] [--every 26] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

#: What each timed part is, in the words the docs use.
PARTS = {
    "grid_sample": "grid sampling of the anatomy",
    "interpolate": "trilinear upsampling of the random fields",
    "noise_draws": "Gaussian noise draws",
    "blur": "the scanner's blur",
    "write": "gzip-compressed NIfTI writing",
}


class PartTimer:
    """Thread-CPU seconds spent inside the wrapped callables, by part; a part called from inside
    another (none here) would be counted in both."""

    def __init__(self) -> None:
        self.seconds = {part: 0.0 for part in PARTS}

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.thread_time() - start
        return timed


class TimedDraws:
    """A numpy Generator whose ``standard_normal`` is timed (the C method cannot be patched on the
    type): every other call goes to the generator unchanged, so the draws are the same."""

    def __init__(self, rng, timer: PartTimer) -> None:
        self._rng = rng
        self.standard_normal = timer.wrap("noise_draws", rng.standard_normal)

    def __getattr__(self, name: str):
        return getattr(self._rng, name)


@contextmanager
def timed_renderer(timer: PartTimer) -> Iterator[None]:
    """Patch the renderer's and the writer's collaborators with timed versions, and restore them."""
    import torch.nn.functional as F
    from scipy import ndimage

    from bench.data.synth import generate as gen
    from bench.data.synth import latents, render, rescans

    patches = [(F, "grid_sample", timer.wrap("grid_sample", F.grid_sample)),
               (F, "interpolate", timer.wrap("interpolate", F.interpolate)),
               (ndimage, "gaussian_filter", timer.wrap("blur", ndimage.gaussian_filter)),
               (gen, "_save", timer.wrap("write", gen._save)),
               (render, "stream_rng", lambda *a: TimedDraws(latents.stream_rng(*a), timer)),
               (rescans.RescanPlan, "acquisition_rng",
                (lambda original: lambda plan: TimedDraws(original(plan), timer))(rescans.RescanPlan.acquisition_rng))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def breakdown(profile: str, every: int) -> dict:
    """Render every ``every``-th subject of ``profile`` (seed 0) on one thread and time its parts."""
    import torch

    from bench.data.synth import generate as gen
    from bench.data.synth import rescans
    from bench.data.synth.anatomy import load_anatomy
    from bench.data.synth.render import Renderer

    torch.set_num_threads(1)  # as each generator worker computes
    config = gen.SynthConfig.from_profile(profile, seed=0)
    renderer = Renderer(load_anatomy(config.resolution), config.resolution)
    everyone = gen.draw_subjects(config, renderer)
    plans = rescans.plan_rescans(config.seed, everyone)
    subjects = everyone[::every]
    timer = PartTimer()
    with tempfile.TemporaryDirectory(prefix="mribench-breakdown-") as out, timed_renderer(timer):
        start = time.thread_time()
        for subject in subjects:
            gen.render_subject(renderer, subject, config, Path(out), plans.get(subject.index, ()))
        total = time.thread_time() - start
    fixed = sum(timer.seconds.values())
    parts = {part: {"what": PARTS[part], "cpu_s": round(s, 2), "share": round(s / total, 4)}
             for part, s in timer.seconds.items()}
    return {"profile": profile, "every": every, "subjects": len(subjects),
            "rescans": sum(len(plans.get(s.index, ())) for s in subjects), "cpu_s": round(total, 2),
            "parts": parts, "pinned_share": round(fixed / total, 4),
            "rest": {"what": "elementwise arithmetic, matrix products and Python", "cpu_s": round(total - fixed, 2),
                     "share": round(1 - fixed / total, 4)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="default")
    p.add_argument("--every", type=int, default=26, help="render every N-th subject (default 26: 60 of 1,560)")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    result = breakdown(args.profile, args.every)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
