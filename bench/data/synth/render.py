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
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.data.synth import effects as fx
from bench.data.synth.anatomy import CHANNELS, Anatomy, output_grid
from bench.data.synth.latents import (SITE_BY_NAME, STREAM_ANATOMY, STREAM_SCAN, Subject, stream_rng)

#: Relative tissue intensities per sequence (before the scanner's effects).
CONTRASTS: dict[str, dict[str, float]] = {
    "T1w": {"gm": 0.60, "wm": 0.85, "csf": 0.28, "core": 0.36, "necrosis": 0.20, "oedema": 0.50},
    "T2w": {"gm": 0.62, "wm": 0.45, "csf": 1.00, "core": 0.82, "necrosis": 0.95, "oedema": 0.85},
    "FLAIR": {"gm": 0.65, "wm": 0.50, "csf": 0.12, "core": 0.72, "necrosis": 0.45, "oedema": 0.92},
}
#: IDH-like mutants show the T2-FLAIR mismatch: a core bright on T2w but suppressed on FLAIR.
MUTANT_FLAIR_CORE = 0.36
HIPPOCAMPUS_RADIUS_MM = 9.0
Vector3 = tuple[float, float, float]


def _ramp(x: float, start: float) -> float:
    return max(x - start, 0.0)


def hippocampal_log_volume(bio_age: float, stage: float, size: float) -> float:
    """Log of the hippocampal volume relative to the template: ageing (accelerating after 40),
    Alzheimer's stage and individual size (parameters and sources: ``effects.py``)."""
    ageing = fx.HIPPO_AGE_LINEAR * _ramp(bio_age, 20.0) + fx.HIPPO_AGE_QUADRATIC * _ramp(bio_age, 40.0) ** 2
    return -ageing - fx.HIPPO_STAGE * stage ** fx.HIPPO_STAGE_POWER + size


#: Radial strengths and the template hippocampus' log-volume under each (measured once by
#: :meth:`Renderer._hippocampus_volume_table`): the Gaussian field scales only the structure's
#: core, so the response is weaker than (1 + a)^-3.
_CONTRACTIONS = np.linspace(-0.45, 1.2, 34)


def hippocampal_contraction(log_volume: float, table: tuple[np.ndarray, np.ndarray]) -> float:
    """Radial contraction strength that scales the hippocampus' volume by exp(log_volume)."""
    strengths, log_volumes = table
    return float(np.interp(-log_volume, -log_volumes, strengths))


def ventricle_log_volume(bio_age: float, stage: float, size: float) -> float:
    """Log of the lateral-ventricle volume relative to the template's (young adult) ventricles."""
    def growth(age: float) -> float:
        return fx.VENT_AGE_LINEAR * _ramp(age, fx.TEMPLATE_AGE) + fx.VENT_AGE_QUADRATIC * _ramp(age, 45.0) ** 2
    return growth(bio_age) + fx.VENT_STAGE * stage + size


def grey_matter_loss(bio_age: float, stage: float) -> float:
    """Fraction of grey matter replaced by CSF (cortical thinning) with age and disease."""
    ageing = fx.GM_AGE_LINEAR * _ramp(bio_age, 20.0) + fx.GM_AGE_QUADRATIC * _ramp(bio_age, 50.0) ** 2
    return float(np.clip(1.0 - math.exp(-ageing) + fx.GM_STAGE * stage, 0.0, 0.6))


def white_matter_loss(bio_age: float) -> float:
    """Fraction of white matter lost (negative: gained) relative to the young-adult template:
    white matter matures into the 40s and is lost after mid-life."""
    growth = fx.WM_GROWTH * (min(max(bio_age, 20.0), 45.0) - fx.TEMPLATE_AGE)
    return float(np.clip(fx.WM_AGE_LINEAR * _ramp(bio_age, 55.0) - growth, -0.15, 0.4))


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """R = Rx @ Ry @ Rz for angles (radians) about x, y, z: a subject's head rotation
    (:meth:`Renderer.subject_field`) and a rescan's head position (:meth:`Renderer.render_rescan`)."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


@dataclass(frozen=True)
class StructureState:
    """The structure-level latents of one visit (recorded in the ground truth)."""

    biological_age: float
    hippocampus_log_volume: tuple[float, float]  # left, right
    ventricle_log_volume: float
    gm_loss: float
    wm_loss: float


def structure_state(subject: Subject, month: float) -> StructureState:
    bio = subject.biological_age(month)
    stage = subject.stage(month)
    burden = subject.stage_burden(month, fx.DRIFT_POWER)
    h = hippocampal_log_volume(bio, stage, subject.hippocampus_size) - fx.HIPPO_DRIFT * burden
    return StructureState(
        biological_age=bio,
        hippocampus_log_volume=(h + subject.hippocampus_asym, h - subject.hippocampus_asym),
        ventricle_log_volume=ventricle_log_volume(bio, stage, subject.ventricle_size) + fx.VENT_DRIFT * burden,
        gm_loss=grey_matter_loss(bio, stage), wm_loss=white_matter_loss(bio))


@dataclass
class SubjectField:
    """A subject's individual anatomy, precomputed as grid_sample coordinates."""

    linear_inv: torch.Tensor      # (3, 3) inverse of the head scale / rotation
    offset_to_grid: torch.Tensor  # (3, 3) maps a displacement in mm to grid coordinates
    base_grid: torch.Tensor       # (D, H, W, 3) sampling grid of the undiseased subject


@dataclass
class SessionTissue:
    """The tissue fractions of one visit on the output grid and their volumes (ml): the anatomy
    every acquisition of the session images."""

    gm: torch.Tensor
    wm: torch.Tensor
    csf: torch.Tensor
    brain: torch.Tensor            # gm + wm + csf
    measures: dict[str, float]     # structure volumes (ml), before any lesion


@dataclass
class RenderedSession:
    """All sequences of one session plus its masks and measured latents."""

    images: dict[str, np.ndarray]   # sequence -> int16 volume
    brain_mask: np.ndarray          # uint8
    tumour_labels: np.ndarray | None  # uint8: 1 oedema, 2 core
    measures: dict[str, float]      # structure volumes (ml) measured on this session's anatomy
    tissue: SessionTissue | None = None  # the tissue maps the images were made from (for a rescan)


_HIPPOCAMPUS = CHANNELS.index("hippocampus")
#: Channels that are exactly zero off their support (the ventricle distance is defined everywhere:
#: it rides along with the tissue maps, see :meth:`Renderer._sample`).
_SUPPORTED = tuple(i for i, c in enumerate(CHANNELS) if c != "ventricle_distance")
#: Template voxels of slack around a support when deciding which sample points can reach it: a
#: point reads the template voxels on either side of it, within one voxel of its nearest one, and
#: the test rounds differently from grid_sample (by far less than a voxel); two voxels cover both.
_SUPPORT_MARGIN = 2


#: Rows of an (N, 3) array of points that arithmetic with a 3-vector per row handles at once. An
#: operation that broadcasts a (3,) vector over (N, 3) runs several times slower than one on equal
#: shapes, so the vector is repeated over a block of rows (:func:`repeated_rows`) and the array is
#: walked block by block (:func:`row_blocks`): the same operations on every element, at a fraction of
#: the cost, with tiles of a fixed size whatever the resolution.
BLOCK_ROWS = 1 << 16


def repeated_rows(vector: torch.Tensor) -> torch.Tensor:
    """(3,) -> (BLOCK_ROWS, 3), the vector on every row."""
    return vector.repeat(BLOCK_ROWS, 1)


def row_blocks(n: int) -> Iterator[slice]:
    """Slices of at most BLOCK_ROWS rows covering ``range(n)``."""
    return (slice(start, min(start + BLOCK_ROWS, n)) for start in range(0, n, BLOCK_ROWS))


def blockwise_(points: torch.Tensor, *steps: tuple[str, torch.Tensor]) -> torch.Tensor:
    """Apply in-place operations with repeated rows, e.g. ``("add_", repeated_rows(c))``, to the
    (N, 3) contiguous ``points``, block by block, in the order given; returns ``points``."""
    for rows in row_blocks(len(points)):
        block = points[rows]
        for name, tile in steps:
            getattr(block, name)(tile[:len(block)])
    return points


@dataclass(frozen=True)
class _ChannelSampler:
    """Some anatomy channels and where they can read non-zero: a template mask of their support,
    dilated by :data:`_SUPPORT_MARGIN` voxels, looked up at a sample point's nearest voxel."""

    channels: tuple[int, ...]
    source: torch.Tensor   # (1, len(channels), D, H, W)
    support: torch.Tensor  # (D * H * W,) bool, dilated
    scale: torch.Tensor    # (BLOCK, 3) grid coordinate + 1 -> voxel index, (x, y, z) = (W, H, D) order, per row
    last: torch.Tensor     # (BLOCK, 3) the last voxel index along x, y, z, per row
    strides: torch.Tensor  # (3,) flat-index strides of x, y, z (float32)

    def reach(self, points: torch.Tensor) -> torch.Tensor:
        """(M, 3) sample points -> (M,) bool: False only where the point reads zeros alone."""
        out = torch.empty(len(points), dtype=torch.bool)
        for rows in row_blocks(len(points)):
            block = points[rows]
            scale, last = self.scale[:len(block)], self.last[:len(block)]
            nearest = torch.mul(block, scale).add_(scale).round_().clamp_(min=0)
            torch.minimum(nearest, last, out=nearest)
            out[rows] = self.support.index_select(0, (nearest @ self.strides).long())  # float32 holds these exactly
        return out

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """(M, 3) sample points -> (len(channels), M) values, exactly as grid_sample on any grid."""
        if not len(points):
            return torch.zeros((len(self.channels), 0), dtype=self.source.dtype)
        return F.grid_sample(self.source, points.reshape(1, 1, 1, -1, 3), mode="bilinear",
                             padding_mode="zeros", align_corners=True)[0, :, 0, 0]


def _support_sampler(source: torch.Tensor, channels: tuple[int, ...]) -> _ChannelSampler:
    """A sampler of ``channels``; its support is where any of them in :data:`_SUPPORTED` is non-zero."""
    picked = source[:, list(channels)].contiguous()
    support = (picked[0, [i for i, c in enumerate(channels) if c in _SUPPORTED]] != 0).any(0).numpy()
    support = ndimage.binary_dilation(support, np.ones((3, 3, 3), bool), iterations=_SUPPORT_MARGIN)
    d, h, w = support.shape
    last = torch.tensor([w - 1, h - 1, d - 1], dtype=torch.float32)
    return _ChannelSampler(channels=channels, source=picked, support=torch.from_numpy(support.ravel()),
                           scale=repeated_rows(last / 2), last=repeated_rows(last),
                           strides=torch.tensor([1, w, h * w], dtype=torch.float32))


def nonzero_indices(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the True entries of ``mask``, as ``mask.nonzero()`` gives them (numpy's
    version is about ten times faster on a volume, and gives the same int64 indices)."""
    return torch.from_numpy(np.flatnonzero(mask.numpy()))


def _channel_samplers(source: torch.Tensor) -> tuple[_ChannelSampler, _ChannelSampler]:
    """The tissue maps with the ventricle distance, and the hippocampus (a small support of its
    own, inside the tissue maps' one)."""
    tissue = tuple(i for i in range(len(CHANNELS)) if i != _HIPPOCAMPUS)
    return _support_sampler(source, tissue), _support_sampler(source, (_HIPPOCAMPUS,))


def _axis_map(matrix: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """For a (3, 3) matrix with one non-zero per row (an axis-aligned affine): the column of each
    row's non-zero and its value, so ``x @ matrix.T == x[..., axes] * values``; (None, None) else."""
    rows, cols = matrix.nonzero(as_tuple=True)
    if len(rows) != 3 or sorted(rows.tolist()) != [0, 1, 2]:
        return None, None
    axes = cols[rows.argsort()]
    return axes, matrix[torch.arange(3), axes]


class Renderer:
    """Renders sessions on the output grid of one resolution from one anatomy."""

    def __init__(self, anatomy: Anatomy, resolution: int):
        self.anatomy = anatomy
        self.resolution = resolution
        self.shape, self.affine = output_grid(resolution)
        self.voxel_ml = resolution ** 3 / 1000.0
        self.source = torch.from_numpy(anatomy.channels()).unsqueeze(0)  # (1, C, D, H, W)
        self._samplers = _channel_samplers(self.source)
        ijk = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in self.shape],
                                         indexing="ij"), dim=-1)
        aff = torch.from_numpy(self.affine).float()
        self.world = ijk @ aff[:3, :3].T + aff[:3, 3]  # (D, H, W, 3) mm
        self.centre = torch.tensor(anatomy.affine[:3, :3] @ ((np.array(anatomy.gm.shape) - 1) / 2)
                                   + anatomy.affine[:3, 3], dtype=torch.float32)
        self.world_from_centre = self.world - self.centre  # the same for every subject
        self.src_inv = torch.from_numpy(np.linalg.inv(anatomy.affine)).float()
        # world mm -> grid_sample's normalised coordinates of the template, (k, j, i) order
        sizes = torch.tensor(self.source.shape[2:], dtype=torch.float32)
        self.to_grid = torch.diag(2 / (sizes - 1)).flip(0) @ self.src_inv[:3, :3]
        self.grid_offset = (2 * self.src_inv[:3, 3] / (sizes - 1) - 1).flip(0)
        # the per-subject grid arithmetic's 3-vectors, repeated over a block of rows (BLOCK_ROWS)
        self._grid_axes, scales = _axis_map(self.to_grid)
        self._centre_rows = repeated_rows(self.centre)
        self._scale_rows = repeated_rows(scales) if scales is not None else None
        self._offset_rows = repeated_rows(self.grid_offset)
        self.centroids = {k: torch.tensor(v, dtype=torch.float32) for k, v in anatomy.centroids().items()}
        # normalised coordinates for polynomial bias fields
        lo, hi = self.world.reshape(-1, 3).min(0).values, self.world.reshape(-1, 3).max(0).values
        u = (self.world - (lo + hi) / 2) / ((hi - lo) / 2)
        x, y, z = u.unbind(-1)
        self.bias_basis = torch.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z])
        self.side = torch.tanh(self.world[..., 0] / 3.0)  # -1 left ... +1 right of the midline
        self._depths, self._log_volumes = self._ventricle_volume_table()
        self._hippocampus_table = self._hippocampus_volume_table()

    def _hippocampus_volume_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Template hippocampal log-volume (relative) under each radial strength, measured by
        warping the template's hippocampus channel in a box around each side."""
        src = torch.from_numpy(self.anatomy.hippocampus)[None, None]
        vols = []
        for a in _CONTRACTIONS:
            total = 0.0
            for side in ("left", "right"):
                c = self.centroids[f"hippocampus_{side}"]
                box = self._box(c, 3.5 * HIPPOCAMPUS_RADIUS_MM)
                x = self.world[box]
                d = x - c
                w = torch.exp(-(d * d).sum(-1, keepdim=True) / (2 * HIPPOCAMPUS_RADIUS_MM ** 2))
                grid = (x + float(a) * d * w) @ self.to_grid.T + self.grid_offset
                total += float(F.grid_sample(src, grid[None], mode="bilinear", align_corners=True).sum())
            vols.append(total)
        vols = np.array(vols)
        return _CONTRACTIONS, np.log(vols / np.interp(0.0, _CONTRACTIONS, vols))

    def _ventricle_volume_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Template ventricle volume as a function of wall depth (mm), relative to depth 0, so
        a target log-volume can be turned into the depth that renders it."""
        an = self.anatomy
        dist = torch.from_numpy(an.ventricle_distance)
        brain = torch.from_numpy(an.brain)
        depths = np.linspace(-6.0, 24.0, 61)
        vols = np.array([float((torch.sigmoid((d - dist) / 0.7) * brain).sum()) for d in depths])
        return depths, np.log(vols / np.interp(0.0, depths, vols))

    def ventricle_depth(self, log_volume: float) -> float:
        """Wall depth (mm, in template units) giving ventricles exp(log_volume) x the template's.
        The subject's head scale enlarges the warped ventricles as well, so it does not enter here."""
        return float(np.interp(log_volume, self._log_volumes, self._depths))

    # -- geometry -----------------------------------------------------------------------
    def _smooth_noise(self, rng: np.random.Generator, coarse: tuple[int, int, int], channels: int) -> torch.Tensor:
        field = torch.from_numpy(rng.standard_normal((1, channels) + coarse).astype(np.float32))
        return F.interpolate(field, size=self.shape, mode="trilinear", align_corners=True)[0]

    def subject_field(self, subject: Subject, seed: int) -> "SubjectField":
        """Individual anatomy: a linear map about the centre (head size, small rotation) and
        a smooth displacement, folded into the sampling grid of grid_sample once per subject."""
        rng = stream_rng(seed, STREAM_ANATOMY, subject.index)
        angles = rng.normal(0, math.radians(2.0), size=3)
        linear = rotation_matrix(angles) * subject.head_scale * (1 + rng.normal(0, 0.015, size=3))  # slight anisotropy
        linear_inv = torch.from_numpy(np.linalg.inv(linear)).float()
        scales = [self._smooth_noise(rng, coarse, 3).mul_(amplitude_mm) for coarse, amplitude_mm in fx.WARP_SCALES]
        disp = scales[0]
        for finer in scales[1:]:
            disp.add_(finer)  # mm, coarse + fine
        atlas = self.world_from_centre @ linear_inv.T
        blockwise_(atlas.view(-1, 3), ("add_", self._centre_rows))
        base = self._to_template_grid(atlas.add_(disp.permute(1, 2, 3, 0)))
        return SubjectField(linear_inv=linear_inv, offset_to_grid=self.to_grid @ linear_inv, base_grid=base)

    def _to_template_grid(self, atlas: torch.Tensor) -> torch.Tensor:
        """(..., 3) atlas mm -> grid_sample's coordinates of the template: ``atlas @ to_grid.T + offset``.

        The template's affine is axis-aligned, so each grid coordinate is one atlas coordinate times a
        scale: a matrix product adds two exact zeros to that one rounded product, so the per-axis
        product below gives the same floats at a fraction of the cost of a (D*H*W, 3) x (3, 3) product."""
        if self._grid_axes is None:
            grid = atlas @ self.to_grid.T
            blockwise_(grid.view(-1, 3), ("add_", self._offset_rows))
            return grid
        grid = atlas.index_select(-1, self._grid_axes)
        blockwise_(grid.view(-1, 3), ("mul_", self._scale_rows), ("add_", self._offset_rows))
        return grid

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
        """Sample the anatomy channels for one visit: (C, D, H, W) on the output grid (the ventricle
        distance only where the tissue maps are non-zero: :meth:`_sample`)."""
        state = structure_state(subject, month)
        grid = field.base_grid.clone()
        for side, log_volume in zip(("left", "right"), state.hippocampus_log_volume):
            c = self._to_subject(self.centroids[f"hippocampus_{side}"], field.linear_inv)
            self._add_radial(grid, field, c, HIPPOCAMPUS_RADIUS_MM * subject.head_scale,
                             hippocampal_contraction(log_volume, self._hippocampus_table))
        if subject.tumour:
            c = self._to_subject(torch.tensor(subject.tumour["centre_mm"], dtype=torch.float32),
                                 field.linear_inv)
            r = subject.tumour["core_radius_mm"] * subject.tumour["oedema_ratio"]
            self._add_radial(grid, field, c, r, -subject.tumour["mass_effect"])
        return self._sample(grid)

    def _sample(self, grid: torch.Tensor) -> torch.Tensor:
        """``grid_sample`` of the anatomy channels on ``grid``, computed only where it can be non-zero.

        Sampling was half of a scan's CPU time, most of it on points outside the template's head,
        where every tissue map is exactly zero. grid_sample computes each voxel from its own
        point alone, so sampling the points that can reach a support (:class:`_ChannelSampler`)
        gives those voxels bit for bit, and the others are the zeros it would have returned. Off
        the tissue the ventricle distance is left at 0: it is only read multiplied by the brain
        map, which is exactly 0 there.
        """
        tissue, hippocampus = self._samplers
        out = torch.zeros((self.source.shape[1], grid[..., 0].numel()), dtype=self.source.dtype)
        points = grid.reshape(-1, 3)
        inside = nonzero_indices(tissue.reach(points))
        points = points.index_select(0, inside)
        for c, values in zip(tissue.channels, tissue.sample(points)):
            out[c].index_copy_(0, inside, values)
        near = nonzero_indices(hippocampus.reach(points))  # within the tissue's support
        out[_HIPPOCAMPUS].index_copy_(0, inside[near], hippocampus.sample(points.index_select(0, near))[0])
        return out.view((-1,) + tuple(grid.shape[:3]))

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
    def session_tissue(self, subject: Subject, field: SubjectField, visit_index: int) -> SessionTissue:
        """The tissue maps of one visit and their true volumes, before any lesion or scanner: what
        every acquisition of the session shares (a rescan images these same maps)."""
        month = subject.visits[visit_index].month
        ch = dict(zip(CHANNELS, self.warp(subject, field, month)))
        brain = ch["gm"] + ch["wm"] + ch["csf"]
        state = structure_state(subject, month)
        # in place on fresh tensors: the same operations in the same order, fewer volumes allocated
        depth = (self.side * subject.ventricle_asym_mm).add_(self.ventricle_depth(state.ventricle_log_volume))
        ventricles = depth.sub_(ch["ventricle_distance"]).div_(0.7).sigmoid_().mul_(brain)  # asymmetric walls
        kept = 1 - ventricles
        wm = (ch["wm"] * kept).mul_(1 - state.wm_loss).mul_(1 + subject.wm_size).clamp_min_(0)
        gm = (ch["gm"] * (1 - state.gm_loss)).mul_(kept).mul_(1 + subject.gm_thickness)
        torch.minimum(gm, (brain - wm).clamp_min_(0), out=gm)
        csf = (brain - gm).sub_(wm)
        measures = {
            "hippocampus_ml": float(ch["hippocampus"].sum()) * self.voxel_ml,
            "ventricles_ml": float(ventricles.sum()) * self.voxel_ml,
            "gm_ml": float(gm.sum()) * self.voxel_ml,
            "wm_ml": float(wm.sum()) * self.voxel_ml,
            "csf_ml": float(csf.sum()) * self.voxel_ml,
            "icv_ml": float(brain.sum()) * self.voxel_ml,
        }
        return SessionTissue(gm=gm, wm=wm, csf=csf, brain=brain, measures=measures)

    def render_session(self, subject: Subject, field: SubjectField, visit_index: int,
                       sequences: tuple[str, ...], seed: int) -> RenderedSession:
        tissue = self.session_tissue(subject, field, visit_index)
        gm, wm, csf, brain = tissue.gm, tissue.wm, tissue.csf, tissue.brain
        measures = dict(tissue.measures)  # the tumour's volumes are added to this session's copy
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
            rng = stream_rng(seed, STREAM_SCAN, subject.index * 1000 + visit_index * 10 + seq_index)
            images[seq] = self.scanner(img, brain, subject.site, rng)
        return RenderedSession(
            images=images, brain_mask=(brain > 0.5).to(torch.uint8).numpy(),
            tumour_labels=None if labels is None else labels.numpy(), measures=measures, tissue=tissue)

    def _rigid_voxel_map(self, translation_mm: Vector3, rotation_deg: Vector3) -> tuple[np.ndarray, np.ndarray]:
        """(M, v): the output voxel ijk of a head moved by a rigid transform (rotation R about the
        template's centre c, then translation t) reads its source voxel M @ ijk + v, the voxel of
        x = R^T (y - c - t) + c on the same grid."""
        a, a0 = self.affine[:3, :3], self.affine[:3, 3]
        a_inv = np.linalg.inv(a)
        rot_t = rotation_matrix(np.radians(rotation_deg)).T
        c, t = self.centre.double().numpy(), np.asarray(translation_mm, dtype=float)
        return a_inv @ rot_t @ a, a_inv @ (rot_t @ (a0 - c - t) + c - a0)

    def _moved_box(self, support: torch.Tensor, m: np.ndarray, v: np.ndarray) -> tuple[slice, slice, slice]:
        """Output voxels that can read a non-zero source voxel: the box of the source's support,
        one voxel wider (bilinear reads the neighbours), mapped forward by the inverse of (M, v)."""
        lo, hi = [], []
        for axis in range(3):
            idx = support.any(dim=tuple(d for d in range(3) if d != axis)).nonzero()
            lo.append(int(idx.min()) - 1)
            hi.append(int(idx.max()) + 1)
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        moved = (corners - v) @ np.linalg.inv(m).T
        first = np.floor(moved.min(0)).astype(int) - 1
        last = np.ceil(moved.max(0)).astype(int) + 1
        box = tuple(slice(max(0, f), min(n, e + 1)) for f, e, n in zip(first, last, self.shape))
        return box  # type: ignore[return-value]

    def move_rigidly(self, volumes: torch.Tensor, translation_mm: Vector3, rotation_deg: Vector3) -> torch.Tensor:
        """(C, D, H, W) volumes moved by a small rigid head motion (trilinear), zero outside.

        Only the box of output voxels that can be non-zero is sampled (most of the grid, but not its
        empty margins): each voxel is computed from its own sample point, so the rest are the zeros
        grid_sample would have returned there."""
        support = (volumes != 0).any(0)
        out = torch.zeros_like(volumes)
        if not bool(support.any()):
            return out
        m, v = self._rigid_voxel_map(translation_mm, rotation_deg)
        box = self._moved_box(support, m, v)
        # grid_sample's coordinates of the source voxel, (k, j, i) in [-1, 1]: affine in the voxel
        # index, so a sum of one term per axis broadcast over the box (cheaper than a matrix product)
        scale = np.diag(2 / (np.array(self.shape) - 1.0))[::-1]
        to_grid = torch.from_numpy(scale @ m).float()
        i, j, k = (torch.arange(s.start, s.stop, dtype=torch.float32) for s in box)
        grid = ((i[:, None, None, None] * to_grid[:, 0] + j[None, :, None, None] * to_grid[:, 1])
                + (k[None, None, :, None] * to_grid[:, 2] + torch.from_numpy(scale @ v - 1).float()))
        out[(slice(None),) + box] = F.grid_sample(volumes.unsqueeze(0), grid.unsqueeze(0), mode="bilinear",
                                                  padding_mode="zeros", align_corners=True)[0]
        return out

    def render_rescan(self, tissue: SessionTissue, site_name: str, translation_mm: Vector3,
                      rotation_deg: Vector3, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A second T1w acquisition of a session: its tissue maps moved by a small rigid head
        position, then the site's scanner with a fresh draw (``rng``). Returns (image, brain mask).

        The T1w contrast is a linear mix of the tissue maps, so the mix and the brain map are moved
        (two volumes) instead of the three maps: the same image up to float rounding, with a third
        less sampling."""
        k = CONTRASTS["T1w"]
        mixed = torch.stack([tissue.gm * k["gm"] + tissue.wm * k["wm"] + tissue.csf * k["csf"], tissue.brain])
        image, brain = self.move_rigidly(mixed, translation_mm, rotation_deg)
        return self.scanner(image, brain, site_name, rng), (brain > 0.5).to(torch.uint8).numpy()

    def scanner(self, img: torch.Tensor, brain: torch.Tensor, site_name: str,
                rng: np.random.Generator) -> np.ndarray:
        """Apply the site's acquisition: texture, gamma, bias, blur, Rician noise, scale; int16."""
        site = SITE_BY_NAME[site_name]
        # in place wherever a fresh array can take the result: the same operations in the same order
        # (so the same floats) without allocating and faulting in a new volume at each step
        texture = self._smooth_noise(rng, (22, 26, 22), 1)[0].mul_(0.04).add_(1)
        img = (img * texture).clamp_min_(0).pow_(site.gamma)
        coefs = torch.from_numpy(rng.normal(0, 1 / 3, size=9).astype(np.float32))
        img.mul_(torch.einsum("k,kdhw->dhw", coefs, self.bias_basis).mul_(site.bias).exp_())
        arr = img.numpy()
        if site.blur_mm > 0:
            arr = ndimage.gaussian_filter(arr, site.blur_mm / self.resolution, mode="constant")
        inside = brain.numpy() > 0.5
        sigma = site.noise * float(arr[inside].mean()) if inside.any() else 0.0
        real = rng.standard_normal(arr.shape, dtype=np.float32)
        imaginary = rng.standard_normal(arr.shape, dtype=np.float32)
        magnitude = np.square(np.add(arr, np.multiply(real, sigma, out=real), out=real), out=real)
        magnitude += np.square(np.multiply(imaginary, sigma, out=imaginary), out=imaginary)
        arr = np.sqrt(magnitude, out=magnitude)  # Rician: |signal + complex Gaussian noise|
        arr *= 1000.0 * site.scale * float(rng.normal(1.0, 0.03))
        arr[~inside] = 0.0
        return np.clip(np.rint(arr, out=arr), 0, 32767, out=arr).astype(np.int16)
