"""Turn a subject's latents into voxels: warp the template anatomy, grow the disease, image it.

One scan = (1) a subject-specific smooth deformation and head scale of the MNI anatomy,
(2) visit-specific radial deformations: hippocampal contraction and ventricle expansion grow
with the Alzheimer's stage and age, a tumour pushes tissue outward, (3) tissue mixing (grey
matter thins with age and stage), (4) a sequence-specific contrast, (5) the site's scanner:
gamma, bias field, blur, Rician noise, intensity scale. Each step is seeded by the scan's own
random stream, so scans are reproducible one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.data.synth.anatomy import CHANNELS, Anatomy, output_grid
from bench.data.synth.latents import (SITE_BY_NAME, STREAM_ANATOMY, STREAM_SCAN, Subject, _rng)

#: Relative tissue intensities per sequence (before the scanner's effects).
CONTRASTS: dict[str, dict[str, float]] = {
    "T1w": {"gm": 0.60, "wm": 0.85, "csf": 0.28, "core": 0.36, "necrosis": 0.20, "oedema": 0.50},
    "T2w": {"gm": 0.62, "wm": 0.45, "csf": 1.00, "core": 0.82, "necrosis": 0.95, "oedema": 0.85},
    "FLAIR": {"gm": 0.65, "wm": 0.50, "csf": 0.12, "core": 0.72, "necrosis": 0.45, "oedema": 0.92},
}
#: IDH-like mutants show the T2-FLAIR mismatch: a core bright on T2w but suppressed on FLAIR.
MUTANT_FLAIR_CORE = 0.36
HIPPOCAMPUS_RADIUS_MM = 9.0


def hippocampal_contraction(stage: float, age: float, individual: float) -> float:
    """Radial contraction strength of each hippocampus (volume falls ~ (1+a)^-3)."""
    return 0.16 * stage + 0.002 * max(age - 60.0, 0.0) + individual


def ventricular_expansion(stage: float, age: float, individual: float) -> float:
    """How far (mm) the ventricle wall has moved outward, replacing tissue by CSF."""
    return 2.5 * stage + 0.06 * max(age - 55.0, 0.0) + individual


def grey_matter_loss(stage: float, age: float) -> float:
    """Fraction of grey matter replaced by CSF (cortical thinning) with age and disease."""
    return float(np.clip(0.004 * max(age - 55.0, 0.0) + 0.07 * stage, 0.0, 0.5))


@dataclass
class SubjectField:
    """A subject's individual anatomy, precomputed as grid_sample coordinates."""

    linear_inv: torch.Tensor      # (3, 3) inverse of the head scale / rotation
    offset_to_grid: torch.Tensor  # (3, 3) maps a displacement in mm to grid coordinates
    base_grid: torch.Tensor       # (D, H, W, 3) sampling grid of the undiseased subject


@dataclass
class RenderedSession:
    """All sequences of one session plus its masks and measured latents."""

    images: dict[str, np.ndarray]   # sequence -> int16 volume
    brain_mask: np.ndarray          # uint8
    tumour_labels: np.ndarray | None  # uint8: 1 oedema, 2 core
    measures: dict[str, float]      # structure volumes (ml) measured on this session's anatomy


class Renderer:
    """Renders sessions on the output grid of one resolution from one anatomy."""

    def __init__(self, anatomy: Anatomy, resolution: int):
        self.anatomy = anatomy
        self.resolution = resolution
        self.shape, self.affine = output_grid(resolution)
        self.voxel_ml = resolution ** 3 / 1000.0
        self.source = torch.from_numpy(anatomy.channels()).unsqueeze(0)  # (1, C, D, H, W)
        ijk = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in self.shape],
                                         indexing="ij"), dim=-1)
        aff = torch.from_numpy(self.affine).float()
        self.world = ijk @ aff[:3, :3].T + aff[:3, 3]  # (D, H, W, 3) mm
        self.centre = torch.tensor(anatomy.affine[:3, :3] @ ((np.array(anatomy.gm.shape) - 1) / 2)
                                   + anatomy.affine[:3, 3], dtype=torch.float32)
        self.src_inv = torch.from_numpy(np.linalg.inv(anatomy.affine)).float()
        self.centroids = {k: torch.tensor(v, dtype=torch.float32) for k, v in anatomy.centroids().items()}
        # normalised coordinates for polynomial bias fields
        lo, hi = self.world.reshape(-1, 3).min(0).values, self.world.reshape(-1, 3).max(0).values
        u = (self.world - (lo + hi) / 2) / ((hi - lo) / 2)
        x, y, z = u.unbind(-1)
        self.bias_basis = torch.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z])

    # -- geometry -----------------------------------------------------------------------
    def _smooth_noise(self, rng: np.random.Generator, coarse: tuple[int, int, int], channels: int) -> torch.Tensor:
        field = torch.from_numpy(rng.standard_normal((1, channels) + coarse).astype(np.float32))
        return F.interpolate(field, size=self.shape, mode="trilinear", align_corners=True)[0]

    def subject_field(self, subject: Subject, seed: int) -> "SubjectField":
        """Individual anatomy: a linear map about the centre (head size, small rotation) and
        a smooth displacement, folded into the sampling grid of grid_sample once per subject."""
        rng = _rng(seed, STREAM_ANATOMY, subject.index)
        angles = rng.normal(0, math.radians(2.0), size=3)
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
               @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
               @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
        linear = rot * subject.head_scale * (1 + rng.normal(0, 0.015, size=3))  # slight anisotropy
        linear_inv = torch.from_numpy(np.linalg.inv(linear)).float()
        disp = (self._smooth_noise(rng, (6, 7, 6), 3) * 2.5).permute(1, 2, 3, 0)  # mm
        # world (mm, output grid) -> normalised grid_sample coordinates, (k, j, i) order
        sizes = torch.tensor(self.source.shape[2:], dtype=torch.float32)
        to_grid = torch.diag(2 / (sizes - 1)).flip(0) @ self.src_inv[:3, :3]
        grid_offset = (2 * self.src_inv[:3, 3] / (sizes - 1) - 1).flip(0)
        atlas = (self.world - self.centre) @ linear_inv.T + self.centre + disp
        base = atlas @ to_grid.T + grid_offset
        return SubjectField(linear_inv=linear_inv, offset_to_grid=to_grid @ linear_inv, base_grid=base)

    def _box(self, centre: torch.Tensor, half_mm: float) -> tuple[slice, slice, slice]:
        """Voxel slices of the output grid within ``half_mm`` of ``centre``."""
        lo = np.floor((centre.numpy() - half_mm - self.affine[:3, 3]) / self.resolution).astype(int)
        hi = np.ceil((centre.numpy() + half_mm - self.affine[:3, 3]) / self.resolution).astype(int) + 1
        return tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(lo, hi, self.shape))  # type: ignore[return-value]

    def _add_radial(self, grid: torch.Tensor, field: "SubjectField", centre: torch.Tensor,
                    radius: float, strength: float) -> None:
        """Add the displacement a*(x-c)*exp(-|x-c|^2/2r^2) inside a 3.5 r box, in place.

        Sampling outward (a > 0) shrinks the structure around c; inward (a < 0) grows it.
        """
        box = self._box(centre, 3.5 * radius)
        d = self.world[box] - centre
        w = torch.exp(-(d * d).sum(-1, keepdim=True) / (2 * radius ** 2))
        grid[box] += (strength * d * w) @ field.offset_to_grid.T

    def _to_subject(self, atlas_point: torch.Tensor, linear_inv: torch.Tensor) -> torch.Tensor:
        """Map an atlas point into (approximately) the subject's space, for deformation centres."""
        return torch.linalg.solve(linear_inv, atlas_point - self.centre) + self.centre

    def warp(self, subject: Subject, field: "SubjectField", month: float) -> torch.Tensor:
        """Sample the anatomy channels for one visit: (C, D, H, W) on the output grid."""
        age, stage = subject.age(month), subject.stage(month)
        grid = field.base_grid.clone()
        a_h = hippocampal_contraction(stage, age, subject.hippocampus_var)
        for side in ("left", "right"):
            c = self._to_subject(self.centroids[f"hippocampus_{side}"], field.linear_inv)
            self._add_radial(grid, field, c, HIPPOCAMPUS_RADIUS_MM * subject.head_scale, a_h)
        if subject.tumour:
            c = self._to_subject(torch.tensor(subject.tumour["centre_mm"], dtype=torch.float32),
                                 field.linear_inv)
            r = subject.tumour["core_radius_mm"] * subject.tumour["oedema_ratio"]
            self._add_radial(grid, field, c, r, -subject.tumour["mass_effect"])
        return F.grid_sample(self.source, grid.unsqueeze(0), mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0]

    def tumour_masks(self, subject: Subject, linear_inv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Core, necrosis, oedema and rim weights (0..1) of an irregular lesion."""
        t = subject.tumour
        c = self._to_subject(torch.tensor(t["centre_mm"], dtype=torch.float32), linear_inv)
        d = self.world - c
        dist = d.norm(dim=-1).clamp_min(1e-3)
        u = d / dist.unsqueeze(-1)
        dirs = torch.tensor(t["shape_dirs"], dtype=torch.float32)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        coefs = torch.tensor(t["shape_coefs"], dtype=torch.float32)
        proj = u @ dirs.T
        bumps = (coefs[:2] * proj[..., :2]).sum(-1) + (coefs[2:] * (proj[..., 2:] ** 2 - 1 / 3)).sum(-1)
        radius = t["core_radius_mm"] * (1 + t["irregularity"] * bumps)
        rel = dist / radius
        soft = 1.5 / self.resolution  # partial-volume edge width in units of relative radius*mm
        core = torch.sigmoid((1 - rel) * t["core_radius_mm"] / soft)
        oedema = torch.sigmoid((t["oedema_ratio"] - rel) * t["core_radius_mm"] / soft) * (1 - core)
        necrosis = torch.sigmoid((0.5 - rel) * t["core_radius_mm"] / soft) if t["necrosis"] else torch.zeros_like(core)
        rim = core * torch.sigmoid((rel - 0.8) * t["core_radius_mm"] / soft)
        return core, necrosis, oedema, rim

    # -- imaging -------------------------------------------------------------------------
    def render_session(self, subject: Subject, field: SubjectField, visit_index: int,
                       sequences: tuple[str, ...], seed: int) -> RenderedSession:
        month = subject.visits[visit_index].month
        ch = dict(zip(CHANNELS, self.warp(subject, field, month)))
        brain = ch["gm"] + ch["wm"] + ch["csf"]
        stage, age = subject.stage(month), subject.age(month)
        loss = grey_matter_loss(stage, age)
        depth = ventricular_expansion(stage, age, subject.ventricle_var)
        ventricles = torch.sigmoid((depth - ch["ventricle_distance"]) / 0.7) * brain
        gm = ch["gm"] * (1 - loss) * (1 - ventricles)
        wm = ch["wm"] * (1 - ventricles)
        csf = brain - gm - wm
        measures = {
            "hippocampus_ml": float(ch["hippocampus"].sum()) * self.voxel_ml,
            "ventricles_ml": float(ventricles.sum()) * self.voxel_ml,
            "gm_ml": float(gm.sum()) * self.voxel_ml,
            "wm_ml": float(wm.sum()) * self.voxel_ml,
            "csf_ml": float(csf.sum()) * self.voxel_ml,
            "icv_ml": float(brain.sum()) * self.voxel_ml,
        }
        labels = None
        tissue_w = 1.0
        if subject.tumour:
            core, necrosis, oedema, rim = self.tumour_masks(subject, field.linear_inv)
            core, oedema = core * brain, oedema * brain
            tissue_w = 1 - core
            labels = torch.zeros(self.shape, dtype=torch.uint8)
            labels[oedema > 0.5] = 1
            labels[core > 0.5] = 2
            measures["tumour_core_ml"] = float((labels == 2).sum()) * self.voxel_ml
            measures["tumour_oedema_ml"] = float((labels == 1).sum()) * self.voxel_ml
        images = {}
        for seq_index, seq in enumerate(sequences):
            k = CONTRASTS[seq]
            img = (gm * k["gm"] + wm * k["wm"] + csf * k["csf"]) * tissue_w
            if subject.tumour:
                core_int = k["core"]
                if seq == "FLAIR" and subject.marker == 1:
                    core_int = MUTANT_FLAIR_CORE
                lesion = core_int * (1 - necrosis) + k["necrosis"] * necrosis
                if seq == "FLAIR" and subject.marker == 1:
                    lesion = lesion * (1 - rim) + k["oedema"] * rim
                img = img * (1 - 0.7 * oedema) + k["oedema"] * 0.7 * oedema * (gm + wm + csf) + lesion * core
            rng = _rng(seed, STREAM_SCAN, subject.index * 1000 + visit_index * 10 + seq_index)
            images[seq] = self.scanner(img, brain, subject.site, rng)
        return RenderedSession(
            images=images, brain_mask=(brain > 0.5).to(torch.uint8).numpy(),
            tumour_labels=None if labels is None else labels.numpy(), measures=measures)

    def scanner(self, img: torch.Tensor, brain: torch.Tensor, site_name: str,
                rng: np.random.Generator) -> np.ndarray:
        """Apply the site's acquisition: texture, gamma, bias, blur, Rician noise, scale; int16."""
        site = SITE_BY_NAME[site_name]
        texture = 1 + 0.04 * self._smooth_noise(rng, (22, 26, 22), 1)[0]
        img = (img * texture).clamp_min(0) ** site.gamma
        coefs = torch.from_numpy(rng.normal(0, 1 / 3, size=9).astype(np.float32))
        bias = torch.exp(site.bias * torch.einsum("k,kdhw->dhw", coefs, self.bias_basis))
        img = img * bias
        arr = img.numpy()
        if site.blur_mm > 0:
            arr = ndimage.gaussian_filter(arr, site.blur_mm / self.resolution, mode="constant")
        inside = brain.numpy() > 0.5
        sigma = site.noise * float(arr[inside].mean()) if inside.any() else 0.0
        n1 = rng.standard_normal(arr.shape, dtype=np.float32)
        n2 = rng.standard_normal(arr.shape, dtype=np.float32)
        arr = np.sqrt((arr + sigma * n1) ** 2 + (sigma * n2) ** 2)
        scale = 1000.0 * site.scale * float(rng.normal(1.0, 0.03))
        arr = np.where(inside, arr * scale, 0.0)
        return np.clip(np.rint(arr), 0, 32767).astype(np.int16)
