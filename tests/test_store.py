"""The volume store: resample once, memory-map after, never serve a stale entry."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.data import spaces
from bench.data.spaces import InputSpace, get_space
from bench.data.store import STORE_VERSION, VolumeStore
from bench.errors import ScanError

#: A small space keeps these tests fast.
TINY = InputSpace("tiny", (16, 16, 16), 6.0, (0.0, -17.0, 5.0), description="tests only")


def write_scan(path: Path, seed: int = 0, shape: tuple[int, int, int] = (40, 48, 40)) -> Path:
    """A 4 mm scan centred on the MNI brain (the sanity gate wants most of the brain box covered)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = np.array([0.0, -17.0, 5.0]) - 4.0 * (np.asarray(shape) - 1) / 2
    nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32) + 1, affine), str(path))
    return path


@pytest.fixture
def resample_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count resample_to_space calls (the store looks it up on the spaces module)."""
    calls: list[str] = []
    original = spaces.resample_to_space

    def counting(*args, **kwargs):
        calls.append(kwargs.get("kind", "image"))
        return original(*args, **kwargs)

    monkeypatch.setattr(spaces, "resample_to_space", counting)
    return calls


def test_second_get_is_a_hit(tmp_path: Path, resample_calls: list[str]) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    store = VolumeStore(tmp_path / "cache")
    first = store.get(scan, TINY)
    second = store.get(scan, TINY)
    assert (store.misses, store.hits) == (1, 1)
    assert resample_calls == ["image"]
    np.testing.assert_array_equal(first, second)
    assert first.shape == TINY.shape and first.dtype == np.float32


def test_result_is_read_only_memmap_in_documented_layout(tmp_path: Path) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    store = VolumeStore(tmp_path / "cache")
    array = store.get(scan, TINY)
    assert isinstance(array, np.memmap)
    assert not array.flags.writeable
    with pytest.raises(ValueError):
        array[0, 0, 0] = 1.0
    entry = store.path_for(scan, TINY)
    assert entry.parent.parent == tmp_path / "cache" / "tiny"
    assert entry.parent.name == entry.stem[:2] and entry.suffix == ".npy"
    assert Path(array.filename) == entry
    assert not list(entry.parent.glob("*.tmp"))  # no temporary file left behind


def test_new_store_on_same_root_hits_disk_cache(tmp_path: Path, resample_calls: list[str]) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    VolumeStore(tmp_path / "cache").get(scan, TINY)
    again = VolumeStore(tmp_path / "cache")
    again.get(scan, TINY)
    assert (again.hits, again.misses) == (1, 0)
    assert len(resample_calls) == 1


def test_changed_file_is_a_miss(tmp_path: Path, resample_calls: list[str]) -> None:
    scan = write_scan(tmp_path / "a.nii.gz", seed=0)
    store = VolumeStore(tmp_path / "cache")
    before = np.array(store.get(scan, TINY))
    write_scan(scan, seed=1)
    stat = scan.stat()
    os.utime(scan, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse-mtime filesystems
    after = np.array(store.get(scan, TINY))
    assert store.misses == 2 and len(resample_calls) == 2
    assert not np.array_equal(before, after)


def test_same_content_at_another_path_is_a_hit(tmp_path: Path) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    copy = tmp_path / "renamed.nii.gz"
    copy.write_bytes(scan.read_bytes())
    store = VolumeStore(tmp_path / "cache")
    store.get(scan, TINY)
    store.get(copy, TINY)
    assert (store.misses, store.hits) == (1, 1)


def test_kind_and_space_have_separate_entries(tmp_path: Path) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    store = VolumeStore(tmp_path / "cache")
    image = store.get(scan, TINY)
    label = store.get(scan, TINY, kind="label")
    other = store.get(scan, InputSpace("tiny", (16, 16, 16), 5.0, TINY.center_mm))
    assert label.dtype == np.uint8 and image.dtype == np.float32
    assert store.misses == 3
    assert len({store.path_for(scan, TINY), store.path_for(scan, TINY, "label")}) == 2
    assert other.shape == (16, 16, 16)
    assert isinstance(STORE_VERSION, int)


def test_space_may_be_given_by_name(tmp_path: Path) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    store = VolumeStore(tmp_path / "cache")
    assert store.get(scan, "cpu-small").shape == get_space("cpu-small").shape


def test_damaged_entry_is_redone(tmp_path: Path) -> None:
    scan = write_scan(tmp_path / "a.nii.gz")
    store = VolumeStore(tmp_path / "cache")
    store.get(scan, TINY)
    store.path_for(scan, TINY).write_bytes(b"garbage")
    assert store.get(scan, TINY).shape == TINY.shape
    assert store.misses == 2


def test_bad_scan_raises_scan_error(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "cache")
    with pytest.raises(ScanError, match="missing.nii.gz.*not found"):
        store.get(tmp_path / "missing.nii.gz", TINY)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ScanError, match="bad.nii.gz"):
        store.get(bad, TINY)
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_prefetch_fills_the_cache(tmp_path: Path, resample_calls: list[str]) -> None:
    scans = [write_scan(tmp_path / f"s{i}.nii.gz", seed=i) for i in range(5)]
    store = VolumeStore(tmp_path / "cache")
    entries = store.prefetch(scans, TINY, workers=3, progress=False)
    assert entries == [store.path_for(s, TINY) for s in scans]
    assert all(e.is_file() for e in entries)
    assert store.misses == 5 and len(resample_calls) == 5
    for scan in scans:
        store.get(scan, TINY)
    assert store.hits == 5 and store.misses == 5


def test_prefetch_names_the_bad_file(tmp_path: Path) -> None:
    scans = [write_scan(tmp_path / f"s{i}.nii.gz", seed=i) for i in range(3)]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(scans[0].read_bytes()[:300])
    store = VolumeStore(tmp_path / "cache")
    with pytest.raises(ScanError, match="broken.nii.gz"):
        store.prefetch([*scans, broken], TINY, workers=2, progress=False)


def test_second_pass_does_not_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    digests: list[str] = []
    original = hashlib.file_digest

    def counting(f, digest):
        digests.append(f.name)
        return original(f, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    scans = [write_scan(tmp_path / f"s{i}.nii.gz", seed=i) for i in range(3)]
    store = VolumeStore(tmp_path / "cache")
    store.prefetch(scans, TINY, workers=2, progress=True)
    assert len(digests) == 3
    VolumeStore(tmp_path / "cache").prefetch(scans, TINY, progress=False)
    for scan in scans:
        store.get(scan, TINY, kind="label")
    assert len(digests) == 3
