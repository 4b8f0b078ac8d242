"""The reference anatomy every synthetic subject is warped from: MNI152 2009a maps from nilearn.

nilearn ships the T1, grey-matter, white-matter and brain-mask maps inside its package, so
this works offline. No hippocampus or ventricle labels ship anywhere; they are derived here
from tissue maps inside anatomical boxes (the template is symmetric, so are the boxes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

#: Output field of view of the synthetic scans (mm, MNI RAS): covers the brain of a large head.
FOV_MM = (176.0, 208.0, 176.0)
FOV_CENTER_MM = (0.0, -17.0, 5.0)

# Anatomical boxes in MNI mm (x is |x| for the bilateral hippocampus box).
VENTRICLE_BOX = {"x": (-28, 28), "y": (-45, 30), "z": (-5, 35)}
HIPPOCAMPUS_BOX = {"absx": (20, 35), "y": (-38, -12), "z": (-24, -6)}


@dataclass(frozen=True)
class Anatomy:
    """Tissue maps and derived structures on the template's own grid (float32, 0..1)."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    hippocampus: np.ndarray
    ventricles: np.ndarray
    ventricle_distance: np.ndarray  # signed distance (mm) to the ventricle surface, >0 outside
    affine: np.ndarray  # voxel -> MNI mm of the template grid
    resolution: int

    def channels(self) -> np.ndarray:
        """Stack the maps that are warped together, in the order of CHANNELS."""
        return np.stack([getattr(self, c) for c in CHANNELS])

    def centroids(self) -> dict[str, np.ndarray]:
        """World centroids (mm) of the structures the disease model deforms around."""
        xyz = _world_coords(self.gm.shape, self.affine)
        out = {}
        v = self.ventricles > 0.5
        x = xyz[..., 0]
        out["ventricle_left"] = xyz[v & (x < 0)].mean(0)
        out["ventricle_right"] = xyz[v & (x > 0)].mean(0)
        h = self.hippocampus > 0.5
        out["hippocampus_left"] = xyz[h & (x < 0)].mean(0)
        out["hippocampus_right"] = xyz[h & (x > 0)].mean(0)
        return out


#: Maps warped together for every scan (the brain mask is their sum, so it is not warped).
CHANNELS = ("gm", "wm", "csf", "hippocampus", "ventricle_distance")


def _world_coords(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    return (ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)).reshape(
        tuple(shape) + (3,))


def output_grid(resolution: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the synthetic scans at ``resolution`` mm (1 or 2)."""
    shape = tuple(int(round(f / resolution)) for f in FOV_MM)
    affine = np.diag([float(resolution)] * 3 + [1.0])
    affine[:3, 3] = [c - (n - 1) / 2 * resolution for c, n in zip(FOV_CENTER_MM, shape)]
    return shape, affine  # type: ignore[return-value]


@lru_cache(maxsize=2)
def load_anatomy(resolution: int = 2) -> Anatomy:
    """Load the nilearn MNI152 maps at ``resolution`` mm and derive the structures."""
    from nilearn import datasets

    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 mm, got {resolution}")
    mask_img = datasets.load_mni152_brain_mask(resolution=resolution)
    affine = mask_img.affine.copy()
    brain = (mask_img.get_fdata() > 0.5).astype(np.float32)
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata().astype(np.float32) * brain
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata().astype(np.float32) * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    xyz = _world_coords(brain.shape, affine)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]

    def inside(lo_hi: tuple[float, float], v: np.ndarray) -> np.ndarray:
        return (v > lo_hi[0]) & (v < lo_hi[1])

    vbox = inside(VENTRICLE_BOX["x"], x) & inside(VENTRICLE_BOX["y"], y) & inside(VENTRICLE_BOX["z"], z)
    ventricles = (vbox & (csf > 0.5)).astype(np.float32)
    # Ventricles enlarge by their wall moving outward: a signed distance map lets each visit
    # threshold it at its own depth (interpolates smoothly under the subject's warp).
    inside_mm = ndimage.distance_transform_edt(ventricles > 0, sampling=resolution)
    outside_mm = ndimage.distance_transform_edt(ventricles == 0, sampling=resolution)
    ventricle_distance = np.clip(outside_mm - inside_mm, -30, 30).astype(np.float32)
    hbox = (inside(HIPPOCAMPUS_BOX["absx"], np.abs(x)) & inside(HIPPOCAMPUS_BOX["y"], y)
            & inside(HIPPOCAMPUS_BOX["z"], z))
    hippocampus = (hbox & (gm > 0.5)).astype(np.float32)
    return Anatomy(gm=gm, wm=wm, csf=csf, brain=brain, hippocampus=hippocampus,
                   ventricles=ventricles, ventricle_distance=ventricle_distance, affine=affine, resolution=resolution)
