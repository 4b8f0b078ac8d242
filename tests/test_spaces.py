"""Input spaces and resampling: physical positions are preserved, labels stay labels."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import spaces
from bench.data.spaces import (SPACES, InputSpace, get_space, resample_to_space, space_affine,
                               zscore_nonzero)

CPU_SMALL = get_space("cpu-small")

#: A 2 mm MNI-like source grid (the timing case of the brief): 88x104x88 from (-88, -121, -83).
SOURCE_SHAPE = (88, 104, 88)
SOURCE_AFFINE = np.array([[2.0, 0, 0, -88], [0, 2.0, 0, -121], [0, 0, 2.0, -83], [0, 0, 0, 1]])


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.append(xyz, 1.0))[:3]


def cube(shape: tuple[int, int, int], affine: np.ndarray, lo_mm: np.ndarray, hi_mm: np.ndarray,
         value: float = 1.0) -> np.ndarray:
    """A volume that is ``value`` where the voxel centre lies in the world box [lo, hi]."""
    idx = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ idx + affine[:3, 3:]).T
    inside = np.all((xyz >= lo_mm) & (xyz <= hi_mm), axis=1)
    return (inside.reshape(shape) * value).astype(np.float32)


def test_registry_and_paper_spaces() -> None:
    assert set(SPACES) >= {"cpu-small", "simclr-paper", "brainiac-96"}
    assert CPU_SMALL.shape == (64, 64, 64) and CPU_SMALL.spacing_mm == 3.0
    assert get_space("simclr-paper").shape == (150, 192, 192)
    assert get_space("brainiac-96").shape == (96, 96, 96)
    with pytest.raises(KeyError, match="cpu-small"):
        get_space("nope")


def test_space_affine_is_centred() -> None:
    affine = space_affine(CPU_SMALL)
    assert np.allclose(np.diag(affine), [3, 3, 3, 1])
    centre_voxel = (np.asarray(CPU_SMALL.shape) - 1) / 2
    assert np.allclose(affine[:3, :3] @ centre_voxel + affine[:3, 3], CPU_SMALL.center_mm)


def test_space_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        InputSpace("bad", (64, 64, 64), 3.0, (0, 0, 0), normalise="minmax")
    with pytest.raises(ValueError):
        InputSpace("bad", (64, 64, 64), -1.0, (0, 0, 0))


@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 56, 48)])
def test_cube_lands_at_the_right_voxels(shape: tuple[int, int, int]) -> None:
    # A 12 mm cube off centre, so that an axis swap or flip would move it; the non-cubic
    # grid catches a mix-up of grid_sample's (W, H, D) order on the target side.
    lo, hi = np.array([20.0, -50.0, 10.0]), np.array([32.0, -38.0, 22.0])
    source = cube(SOURCE_SHAPE, SOURCE_AFFINE, lo, hi, value=100.0)
    space = InputSpace("raw", shape, 3.0, CPU_SMALL.center_mm, normalise="none")
    out = resample_to_space(source, SOURCE_AFFINE, space)
    assert out.shape == space.shape and out.dtype == np.float32
    target = space_affine(space)
    bright = np.argwhere(out > 50)
    centroid_mm = target[:3, :3] @ bright.mean(axis=0) + target[:3, 3]
    assert np.allclose(centroid_mm, (lo + hi) / 2, atol=1.5)
    # Every grid point well inside the cube is bright; every one well outside is dark.
    expected_in = cube(space.shape, target, lo + 3, hi - 3)
    expected_out = 1 - cube(space.shape, target, lo - 4, hi + 4)
    assert np.all(out[expected_in > 0] > 90)
    assert np.all(out[expected_out > 0] < 1)


def test_outside_source_field_of_view_is_zero() -> None:
    # A small source covering only part of the grid: the rest must be background.
    source = np.ones((10, 10, 10), dtype=np.float32)
    space = InputSpace("raw", (64, 64, 64), 3.0, CPU_SMALL.center_mm, normalise="none")
    out = resample_to_space(source, np.diag([2.0, 2.0, 2.0, 1.0]), space)
    assert out[0, 0, 0] == 0 and out[-1, -1, -1] == 0
    assert out.max() > 0.99


def test_labels_stay_integer_with_same_label_set() -> None:
    labels = np.zeros(SOURCE_SHAPE, dtype=np.uint8)
    labels += cube(SOURCE_SHAPE, SOURCE_AFFINE, np.array([-40, -60, -20]), np.array([0, -20, 20]),
                   1).astype(np.uint8)
    labels[cube(SOURCE_SHAPE, SOURCE_AFFINE, np.array([-30, -50, -10]), np.array([-10, -30, 10]))
           > 0] = 2
    labels += cube(SOURCE_SHAPE, SOURCE_AFFINE, np.array([20, 0, 0]), np.array([40, 20, 20]),
                   3).astype(np.uint8)
    out = resample_to_space(labels, SOURCE_AFFINE, CPU_SMALL, kind="label")
    assert out.dtype == np.uint8 and out.shape == CPU_SMALL.shape
    assert set(np.unique(out)) == set(np.unique(labels)) == {0, 1, 2, 3}
    # Volumes are preserved to within a boundary layer.
    for value in (1, 2, 3):
        src_ml = np.count_nonzero(labels == value) * 8.0
        out_ml = np.count_nonzero(out == value) * 27.0
        assert abs(out_ml - src_ml) / src_ml < 0.35


def test_zscore_over_nonzero_voxels_and_zeros_stay_zero() -> None:
    rng = np.random.default_rng(0)
    source = cube(SOURCE_SHAPE, SOURCE_AFFINE, np.array([-60, -90, -40]), np.array([60, 50, 60]))
    source *= rng.normal(500, 80, SOURCE_SHAPE).astype(np.float32)
    out = resample_to_space(source, SOURCE_AFFINE, CPU_SMALL)
    raw = resample_to_space(source, SOURCE_AFFINE,
                            InputSpace("raw", CPU_SMALL.shape, 3.0, CPU_SMALL.center_mm,
                                       normalise="none"))
    brain = out != 0
    assert np.array_equal(brain, raw != 0)
    assert abs(out[brain].mean()) < 1e-4 and abs(out[brain].std() - 1) < 1e-4
    assert np.all(out[raw == 0] == 0)


def test_zscore_of_constant_or_empty_volume() -> None:
    assert np.all(zscore_nonzero(np.zeros((3, 3, 3))) == 0)
    const = np.zeros((3, 3, 3), np.float32)
    const[1, 1, 1] = 5
    assert np.all(np.isfinite(zscore_nonzero(const)))


def test_identity_resampling_is_unchanged() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(10, 2, CPU_SMALL.shape).astype(np.float32)
    raw = InputSpace("raw", CPU_SMALL.shape, 3.0, CPU_SMALL.center_mm, normalise="none")
    out = resample_to_space(data, space_affine(CPU_SMALL), raw)
    np.testing.assert_allclose(out, data, atol=1e-4)
    normalised = resample_to_space(data, space_affine(CPU_SMALL), CPU_SMALL)
    np.testing.assert_allclose(normalised, zscore_nonzero(data), atol=1e-4)
    labels = (data > 10).astype(np.uint8)
    np.testing.assert_array_equal(
        resample_to_space(labels, space_affine(CPU_SMALL), CPU_SMALL, kind="label"), labels)


def test_flipped_source_axis_is_handled() -> None:
    # LAS storage (x axis flipped) of the same cube must give the same result as RAS.
    lo, hi = np.array([20.0, -50.0, 10.0]), np.array([32.0, -38.0, 22.0])
    ras = cube(SOURCE_SHAPE, SOURCE_AFFINE, lo, hi, 100.0)
    las_affine = SOURCE_AFFINE.copy()
    las_affine[0, 0], las_affine[0, 3] = -2.0, SOURCE_AFFINE[0, 3] + 2.0 * (SOURCE_SHAPE[0] - 1)
    np.testing.assert_allclose(resample_to_space(ras[::-1].copy(), las_affine, CPU_SMALL),
                               resample_to_space(ras, SOURCE_AFFINE, CPU_SMALL), atol=1e-4)


def test_downsampling_is_anti_aliased(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 1 mm checkerboard has no content a 3 mm grid can represent: it must average out.
    # Grid points sit on source voxel centres, so without the blur they would alias to 1 / 2.
    shape = (120, 140, 120)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-60.5, -87.5, -55.5]  # grid points fall on source voxel centres
    board = (np.indices(shape).sum(axis=0) % 2).astype(np.float32) + 1.0
    raw = InputSpace("raw", (32, 32, 32), 3.0, CPU_SMALL.center_mm, normalise="none")
    out = resample_to_space(board, affine, raw)
    inner = out[4:-4, 4:-4, 4:-4]
    assert np.allclose(inner, 1.5, atol=0.1)
    monkeypatch.setattr(spaces, "ANTI_ALIAS_SIGMA_PER_RATIO", 0.0)
    aliased = resample_to_space(board, affine, raw)[4:-4, 4:-4, 4:-4]
    assert np.abs(aliased - 1.5).max() > 0.4
