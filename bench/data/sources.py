"""Resolve what the user named (nothing, 'synth', a BIDS folder, a manifest) into a Cohort.

With nothing named, the synthetic cohort of the run profile is used, generated on first use
into the cache and reused afterwards (a second run does not regenerate it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import CohortError
from bench.paths import cache_home

if TYPE_CHECKING:
    from bench.data.cohort import Cohort

# The readers and the generator (pandas, torch) are imported where used: ``bench list`` asks where
# the synthetic cohort would be without loading them.


def synth_name(profile: str) -> str:
    """Cohort name of a profile's synthetic cohort; split files live under splits/<name>/."""
    return f"synth-{profile}"


def synth_dir(profile: str, seed: int = 0) -> Path:
    """The folder of a profile's synthetic cohort (at the profile's resolution, as
    ``SynthConfig.from_profile`` sets it), whether generated or not."""
    from bench.profiles import get_profile

    return cache_home() / "cohorts" / f"synth-{profile}-seed{seed}-{get_profile(profile).synth_resolution}mm"


def generate(config, out: Path, progress: bool = True) -> None:
    """Generate a synthetic cohort (:func:`bench.data.synth.generate.generate`, imported when called:
    it loads torch)."""
    from bench.data.synth.generate import generate as run_generator

    run_generator(config, out, progress=progress)


def cohort_lock(profile: str, seed: int = 0) -> str:
    """The name of the cache lock under which a profile's synthetic cohort is generated (the one
    ``bench run``, ``bench suite run`` and ``bench pretrain`` hold around opening it)."""
    return f"cohort-{profile}-seed{seed}"


def ensure_synth(profile: str, seed: int = 0, progress: bool = True) -> Path:
    """The profile's synthetic cohort folder, generating it only if it is not there yet.

    The generation runs under the cohort's lock, taken by every command that opens the cohort
    this way: one that comes while another process generates it waits (with a note saying so)
    and then reads the finished tree. Without the lock it would generate the cohort a second
    time, and that second generator's final swap deletes the first one's tree under whoever is
    already reading it (scans of a session missing half-way through a run).
    """
    from bench.data.synth.generate import SynthConfig, is_complete
    from bench.locks import cache_lock

    out = synth_dir(profile, seed)
    cfg = SynthConfig.from_profile(profile, seed=seed)
    if is_complete(out, cfg):  # the common case: no lock to take (a complete tree is never rewritten)
        return out
    notice = f"waiting for another process to finish generating the synthetic cohort {out.name}"
    with cache_lock(cohort_lock(profile, seed), notice=notice):
        if not is_complete(out, cfg):  # the process waited for may have generated it
            generate(cfg, out, progress=progress)
    return out


def open_cohort(spec: str | Path | None = None, *, profile: str = "default", seed: int = 0,
                progress: bool = True) -> Cohort:
    """``None``/'synth' -> the profile's synthetic cohort; a folder -> BIDS; a .csv/.tsv -> manifest."""
    from bench.data.bids import read_bids
    from bench.data.manifest import read_manifest

    if spec is None or str(spec) == "synth":
        return read_bids(ensure_synth(profile, seed, progress), name=synth_name(profile))
    path = Path(spec)
    if path.is_dir():
        return read_bids(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return read_manifest(path)
    raise CohortError(f"{spec}: not a BIDS folder (with participants.tsv) or a .csv/.tsv manifest")
