"""Input spaces: the physical grids encoders read, and resampling scans onto them.

An encoder declares the grid it was trained on (shape, voxel size, field of view in MNI
world coordinates) instead of resizing arrays, so that every scan of every cohort reaches
it with the same physical meaning per voxel. Scans are assumed to be already in MNI space
(affinely registered), which holds for the synthetic cohort and for the usual
preprocessed releases; resampling then only changes the grid, never the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from bench.registry import Registry

#: Intensity normalisations a space may ask for.
NORMALISATIONS = ("zscore_nonzero", "none")

#: What resample_to_space can produce: continuous intensities or integer labels.
KINDS = ("image", "label")

#: Gaussian sigma, in source voxels, per unit of downsampling ratio (anti-aliasing).
ANTI_ALIAS_SIGMA_PER_RATIO = 0.4

#: Centre of the brain in MNI152 world coordinates (RAS, mm) that all spaces share.
MNI_BRAIN_CENTER = (0.0, -17.0, 5.0)


@dataclass(frozen=True)
class InputSpace:
    """An axis-aligned grid in MNI world coordinates (RAS, mm), centred on ``center_mm``.

    ``normalise`` names the intensity normalisation applied to images after resampling
    (labels are never normalised).
    """

    name: str
    shape: tuple[int, int, int]
    spacing_mm: float
    center_mm: tuple[float, float, float]
    normalise: str = "zscore_nonzero"
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"space {self.name!r}: shape must be 3 positive ints, "
                             f"got {self.shape}")
        if not self.spacing_mm > 0:
            raise ValueError(f"space {self.name!r}: spacing_mm must be > 0, got {self.spacing_mm}")
        if len(self.center_mm) != 3:
            raise ValueError(f"space {self.name!r}: center_mm must have 3 values")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"space {self.name!r}: normalise must be one of {NORMALISATIONS}, "
                             f"got {self.normalise!r}")

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        """Field of view along x, y, z in mm."""
        return tuple(n * self.spacing_mm for n in self.shape)  # type: ignore[return-value]


#: Input spaces by name (a :class:`~bench.registry.Registry`; packages may add theirs through the
#: ``mribench.spaces`` entry-point group).
SPACES: Registry[InputSpace] = Registry("input space", group="mribench.spaces")
for _space in (
    InputSpace("cpu-small", (64, 64, 64), 3.0, MNI_BRAIN_CENTER,
               description="64^3 at 3 mm: small enough to train on 2 CPU cores"),
    InputSpace("simclr-paper", (150, 192, 192), 1.0, MNI_BRAIN_CENTER,
               description="3D-Neuro-SimCLR input: a 150x192x192 crop of MNI 1 mm"),
    InputSpace("brainiac-96", (96, 96, 96), 2.0, MNI_BRAIN_CENTER,
               description="BrainIAC input: 96^3, here at 2 mm over the brain"),
):
    SPACES.register(_space.name, _space)


def get_space(name: str) -> InputSpace:
    """The registered space called ``name``; the error lists the known names."""
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown input space {name!r}; known spaces: "
                       f"{', '.join(sorted(SPACES))}") from None


def space_affine(space: InputSpace) -> np.ndarray:
    """Voxel->world 4x4 affine of the grid: positive spacing, voxel centres centred on center_mm."""
    spacing = float(space.spacing_mm)
    half_extent = spacing * (np.asarray(space.shape, dtype=np.float64) - 1.0) / 2.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(space.center_mm, dtype=np.float64) - half_extent
    return affine


def resample_to_space(volume: np.ndarray, affine: np.ndarray, space: InputSpace,
                      kind: str = "image") -> np.ndarray:
    """Resample ``volume`` (voxel->world ``affine``) onto the grid of ``space``.

    Images: Gaussian anti-aliasing when the grid is coarser than the source, trilinear
    interpolation, then the space's normalisation; float32. Labels: nearest neighbour;
    uint8. Grid points outside the source field of view are 0 (background) in both.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"need a 3D volume and a 4x4 affine, got {volume.shape} "
                         f"and {affine.shape}")
    source = volume.astype(np.float32, copy=False)
    if kind == "image":
        source = _anti_alias(source, affine, space.spacing_mm)
    target_to_source = np.linalg.inv(affine) @ space_affine(space)
    grid = _sampling_grid(target_to_source, space.shape, volume.shape)
    out = _grid_sample(source, grid, mode="bilinear" if kind == "image" else "nearest")
    if kind == "label":
        return np.rint(out).astype(np.uint8)
    if space.normalise == "zscore_nonzero":
        out = zscore_nonzero(out)
    return out.astype(np.float32, copy=False)


def source_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis of an image: the lengths of the affine's columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _anti_alias(volume: np.ndarray, affine: np.ndarray, target_spacing: float) -> np.ndarray:
    """Blur along axes where the target grid is coarser, so downsampling does not alias."""
    ratio = target_spacing / source_spacing(affine)
    sigma = np.where(ratio > 1.0, ANTI_ALIAS_SIGMA_PER_RATIO * ratio, 0.0)
    if not np.any(sigma > 0):
        return volume
    # "nearest" does not darken a head touching the FOV edge; 3 sigma keeps kernels short.
    return gaussian_filter(volume, sigma=sigma, mode="nearest", truncate=3.0)


def _sampling_grid(target_to_source: np.ndarray, target_shape: tuple[int, int, int],
                   source_shape: tuple[int, ...]) -> torch.Tensor:
    """The grid_sample grid: for each target voxel, its source position in normalised units.

    grid_sample reads the last grid dimension as (x, y, z) = (W, H, D), i.e. the *last*
    array axis first, so the index->index map is conjugated by an axis reversal. Indices are
    normalised the align_corners=False way, ``(2 * index + 1) / n - 1`` (well defined even
    for an axis of length 1), on both grids. The grid is built by numpy broadcasting rather
    than ``F.affine_grid``, which is ~10x slower when its threads compete for the CPU.
    """
    reverse = np.eye(4)[[2, 1, 0, 3]]
    theta = (reverse @ _normaliser(source_shape) @ target_to_source
             @ np.linalg.inv(_normaliser(target_shape)) @ reverse)[:3].astype(np.float32)
    depth, height, width = ((2 * np.arange(n, dtype=np.float32) + 1) / n - 1 for n in target_shape)
    grid = np.empty((*target_shape, 3), dtype=np.float32)
    for row in range(3):  # grid[d, h, w] = theta @ (x=w, y=h, z=d, 1)
        grid[..., row] = (theta[row, 0] * width[None, None, :]
                          + theta[row, 1] * height[None, :, None]
                          + theta[row, 2] * depth[:, None, None] + theta[row, 3])
    return torch.from_numpy(grid)[None]


def _normaliser(shape: tuple[int, ...]) -> np.ndarray:
    """4x4 map from voxel index to grid_sample's normalised coordinate (align_corners=False)."""
    size = np.asarray(shape, dtype=np.float64)
    normaliser = np.diag([*(2.0 / size), 1.0])
    normaliser[:3, 3] = 1.0 / size - 1.0
    return normaliser


def _grid_sample(volume: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    """Sample a 3D array at grid positions (zeros outside it) and return the 3D result."""
    source = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    with torch.no_grad():
        out = F.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0, 0].numpy()


def zscore_nonzero(volume: np.ndarray) -> np.ndarray:
    """Z-score with the mean / std of the non-zero (brain) voxels; background stays exactly 0.

    Skull-stripped scans are mostly zeros; including them would make the statistics depend
    on the field of view rather than on the brain.
    """
    out = np.asarray(volume, dtype=np.float32).copy()
    brain = out != 0
    if not np.any(brain):
        return out
    values = out[brain].astype(np.float64)
    std = values.std()
    out[brain] = (values - values.mean()) / (std if std > 0 else 1.0)
    return out
