"""The robustness perturbations in torch, for batches already on the encoder's device.

Why: on a GPU the CPU path (:mod:`bench.perturbations`: TorchIO, MONAI and SciPy on each scan in the
reader) is the slowest part of a robustness pass, and its FFTs and filters are exactly what a GPU is
fast at. Here the same artefacts are computed with torch operations on whatever device the batch is
on, so a perturbed batch never goes back to the host before the encoder's forward.

The parameters are not drawn here: each scan's come from :func:`bench.perturbations.draw_parameters`,
the function the CPU path and the records' digests use, so they are bit-identical to the CPU
path's. What may differ is the arithmetic:

* deterministic perturbations (``exact`` in :data:`DEVICE_PATHS`) repeat the CPU libraries' own
  computation (the same FFT conventions, masks, polynomial, kernel, boundary rule and interpolation)
  and agree with the CPU path within float error (``tests/test_perturbations_device.py``);
* the noise perturbations draw their noise from a ``torch.Generator`` on the batch's device seeded
  with the drawn ``seed``. The noise has the drawn standard deviation, but its values differ from
  the CPU path's: MONAI's Rician noise comes from numpy's generator, and a CUDA generator's stream
  is not the CPU's (on the CPU, Gaussian noise happens to equal TorchIO's, which seeds torch's CPU
  generator the same way). A record computed with device noise is therefore another draw of the
  noise, not the CPU record within float error, and its robustness block says so
  (``perturbation_paths``).

Which perturbation takes which path is declared once, in :data:`DEVICE_PATHS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.errors import MribenchError
from bench.perturbations import PERTURBATIONS

Volume = torch.Tensor          # (D, H, W) float32, a magnitude image on the batch's device
Apply = Callable[[Volume, dict[str, Any], float], Volume]


# -- shared pieces ------------------------------------------------------------------------------
def _fft(x: torch.Tensor) -> torch.Tensor:
    """Centred 3D spectrum (``fftshift(fftn(x))``), TorchIO's and MONAI's convention."""
    return torch.fft.fftshift(torch.fft.fftn(x, dim=(-3, -2, -1)), dim=(-3, -2, -1))


def _ifft(k: torch.Tensor) -> torch.Tensor:
    """The real image of a centred spectrum, as float32 (both libraries keep the real part)."""
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=(-3, -2, -1)), dim=(-3, -2, -1)).real.float()


def _generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with the drawn seed: the same noise on every run of that
    device, whatever else has used torch's global generators."""
    return torch.Generator(device=device).manual_seed(int(seed))


# -- the deterministic perturbations --------------------------------------------------------------
def _gamma(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's Gamma on a non-negative image: ``x ** gamma``."""
    return torch.pow(x, float(p["gamma"]))


def _bias_field(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's BiasField: ``x * exp(polynomial)`` on a grid centred on the volume, each axis
    scaled to a maximum of 1, the coefficients in its (x, y, z) order; float64, then float32."""
    order, coefficients = int(p["order"]), [float(c) for c in p["coefficients"]]
    axes = []
    for n in x.shape:  # TorchIO's coordinates, computed on the host: three short vectors
        r = np.arange(-n / 2, n / 2) + 0.5
        axes.append(torch.as_tensor(r / r.max() if r.max() > 0 else r, device=x.device))
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    field = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    i = 0
    for a in range(order + 1):
        for b in range(order + 1 - a):
            for c in range(order + 1 - (a + b)):
                field += coefficients[i] * gx ** a * gy ** b * gz ** c
                i += 1
    return x * torch.exp(field).float()


def _gibbs(x: Volume, p: dict, spacing: float) -> Volume:
    """MONAI's GibbsNoise: the spectrum outside a sphere of radius (1 - alpha) * max(shape) / sqrt(2)
    around the centre is removed (distances in float64, as MONAI's numpy mask)."""
    shape = x.shape
    radius = (1 - float(p["alpha"])) * np.max(shape) * np.sqrt(2) / 2.0
    dist = 0
    for axis, n in enumerate(shape):
        coord = torch.arange(n, dtype=torch.float64, device=x.device) - (n - 1) / 2
        dist = dist + (coord ** 2).view([-1 if i == axis else 1 for i in range(3)])
    mask = torch.sqrt(dist) <= radius
    return _ifft(_fft(x) * mask)


def _ghosting(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's Ghosting: every ``num_ghosts``-th plane of the spectrum along ``axis`` scaled by
    ``1 - intensity``, then the central ``restore`` share of k-space along that axis put back."""
    num, axis, intensity = int(p["num_ghosts"]), int(p["axis"]), float(p["intensity"])
    if not num or not intensity:
        return x
    spectrum = _fft(x)
    n = spectrum.shape[axis]
    keep = int(np.round(float(p["restore"]) * n)) // 2
    centre = [slice(None)] * 3
    centre[axis] = slice(n // 2 - keep, n // 2 + keep)
    restore = spectrum[tuple(centre)].clone()
    planes = [slice(None)] * 3
    planes[axis] = slice(None, None, num)
    spectrum[tuple(planes)] *= 1 - intensity
    spectrum[tuple(centre)] = restore
    return _ifft(spectrum)


def _spike(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's Spike: ``intensity`` x the spectrum's largest magnitude added at each position
    (a share of each axis, floored to an index); the maximum stays on the device."""
    positions, intensity = np.asarray(p["positions"], dtype=float), float(p["intensity"])
    if intensity == 0 or len(positions) == 0:
        return x
    spectrum = _fft(x)
    indices = np.floor(positions * np.array(spectrum.shape)).astype(int)
    for i, j, k in indices:
        spectrum[int(i), int(j), int(k)] += spectrum.abs().max() * intensity
    return _ifft(spectrum)


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of an axis of length ``n`` padded by ``radius`` with SciPy's ``reflect`` rule
    (d c b a | a b c d | d c b a, repeated for a pad longer than the axis)."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """SciPy's 1D Gaussian weights: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 / (sigma * sigma) * t ** 2)
    return w / w.sum()


def _blur(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's Blur (SciPy's ``gaussian_filter``): one separable 1D Gaussian per axis, sigma in
    voxels = ``std_mm / spacing``, reflected borders, each pass in float64 and stored as float32."""
    sigma = float(p["std_mm"]) / float(spacing)
    weights = torch.as_tensor(_gaussian_kernel(sigma), dtype=torch.float64, device=x.device)
    radius = (len(weights) - 1) // 2
    out = x
    for axis in range(3):
        padded = out.double().index_select(axis, _symmetric_index(out.shape[axis], radius, x.device))
        windows = padded.unfold(axis, len(weights), 1)          # (..., n, ..., kernel)
        out = (windows @ weights).float()
    return out


# -- motion: TorchIO's model, with SimpleITK's rigid resampling in torch ---------------------------
def _euler_matrix(degrees: Sequence[float]) -> np.ndarray:
    """ITK's Euler3DTransform rotation (angles about x, y, z; applied as Rz @ Rx @ Ry)."""
    ax, ay, az = np.radians(np.asarray(degrees, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _index_map(degrees: Sequence[float], translation: Sequence[float], spacing: float):
    """(matrix, offset) taking an output voxel index to the input's continuous index for TorchIO's
    movement: it rebuilds each rotation without its centre, so the head turns about the physical
    origin (voxel 0 here), in SimpleITK's LPS space (x and y flipped)."""
    flip = np.diag([-1.0, -1.0, 1.0])
    return flip @ _euler_matrix(degrees) @ flip, flip @ np.asarray(translation, dtype=float) / spacing


def _trilinear(x: Volume, coords: torch.Tensor) -> Volume:
    """``x`` at continuous indices ``coords`` (..., 3), SimpleITK's linear interpolator: indices
    clamped to the volume, 0 (the magnitude image's minimum) outside [-0.5, n - 0.5); float64."""
    shape = torch.tensor(x.shape, device=x.device)
    inside = ((coords >= -0.5) & (coords < shape - 0.5)).all(-1)
    c = torch.minimum(coords.clamp(min=0), (shape - 1).double())
    base = c.floor().long()
    frac = c - base
    ends = (base, torch.minimum(base + 1, shape - 1))        # the lower and upper neighbour per axis
    v = x.double()
    out = torch.zeros(coords.shape[:-1], dtype=torch.float64, device=x.device)
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        weight = math.prod(frac[..., a] if b else 1 - frac[..., a] for a, b in enumerate(bits))
        out += weight * v[tuple(ends[b][..., a] for a, b in enumerate(bits))]
    return torch.where(inside, out, torch.zeros_like(out)).float()


def _moved(x: Volume, degrees, translation, spacing: float) -> Volume:
    """The volume after one rigid movement, resampled on its own grid."""
    matrix, offset = _index_map(degrees, translation, spacing)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=x.device) for n in x.shape],
                                      indexing="ij"), dim=-1)
    coords = grid @ torch.as_tensor(matrix.T, device=x.device) + torch.as_tensor(offset, device=x.device)
    return _trilinear(x, coords)


def _motion(x: Volume, p: dict, spacing: float) -> Volume:
    """TorchIO's Motion: the k-space of the still and the moved head merged along the last axis at
    the movement's time, ordered (TorchIO's ``sort_spectra``) so that the still head's spectrum
    covers the centre of k-space whether the movement comes before or after half the acquisition."""
    times = np.asarray(p["times"], dtype=float)
    images = [x] + [_moved(x, d, t, spacing) for d, t in zip(p["degrees"], p["translation"])]
    spectra = [_fft(v) for v in images]
    index = int(np.where(times > 0.5)[0].min()) if np.any(times > 0.5) else len(spectra) - 1
    spectra[0], spectra[index] = spectra[index], spectra[0]
    last = spectra[0].shape[2]
    bounds = [int(v) for v in (last * times).astype(int).tolist()] + [last]
    merged = torch.empty_like(spectra[0])
    start = 0
    for spectrum, end in zip(spectra, bounds):
        merged[..., start:end] = spectrum[..., start:end]
        start = end
    return _ifft(merged)


# -- noise: the drawn standard deviation, a generator of the batch's device -----------------------
def _gaussian_noise(x: Volume, p: dict, spacing: float) -> Volume:
    """Additive Gaussian noise of the drawn std (TorchIO's ``randn * std + 0``)."""
    g = _generator(x.device, p["seed"])
    noise = torch.randn((1, *x.shape), generator=g, device=x.device, dtype=torch.float32)[0]
    return x + (noise * float(p["std"]) + 0.0)


def _rician_noise(x: Volume, p: dict, spacing: float) -> Volume:
    """Rician noise: the magnitude of the image plus complex Gaussian noise of the drawn std."""
    g = _generator(x.device, p["seed"])
    n1, n2 = (torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32) * float(p["std"])
              for _ in range(2))
    return torch.sqrt((x + n1) ** 2 + n2 ** 2)


# -- which path each perturbation takes: declared here, once --------------------------------------
@dataclass(frozen=True)
class DevicePath:
    """How a perturbation runs when the job's device is not the CPU: ``apply`` (None: it stays on the
    CPU path, in the reader), whether the result is the CPU path's within float error, and why."""

    apply: Apply | None
    exact: bool
    why: str


DEVICE_PATHS: dict[str, DevicePath] = {
    "contrast": DevicePath(_gamma, True, "a power of each voxel"),
    "bias_field": DevicePath(_bias_field, True, "TorchIO's polynomial on a coordinate grid, in float64"),
    "gibbs": DevicePath(_gibbs, True, "MONAI's spherical k-space mask, torch.fft"),
    "gaussian_noise": DevicePath(_gaussian_noise, False,
                                 "the drawn std from a torch.Generator of the device: other noise values on CUDA"),
    "rician_noise": DevicePath(_rician_noise, False,
                               "the drawn std from a torch.Generator of the device: other values than numpy's"),
    "motion": DevicePath(_motion, True, "SimpleITK's rigid linear resampling as a trilinear gather, "
                                        "TorchIO's k-space merge with torch.fft"),
    "ghosting": DevicePath(_ghosting, True, "TorchIO's k-space plane scaling, torch.fft"),
    "spike": DevicePath(_spike, True, "TorchIO's k-space spike, torch.fft"),
    "downsample": DevicePath(None, False, "TorchIO antialiases with SimpleITK's recursive (IIR) Gaussian and "
                                          "resamples on a grid of SimpleITK's; a convolution only approximates "
                                          "the one, so it stays on the CPU"),
    "blur": DevicePath(_blur, True, "SciPy's separable Gaussian with reflected borders, in float64"),
}


def on_device(name: str) -> bool:
    """Whether perturbation ``name`` has a device implementation (else the CPU path applies it)."""
    if name not in PERTURBATIONS:
        raise MribenchError(f"unknown perturbation '{name}'; choose from {', '.join(PERTURBATIONS)}")
    path = DEVICE_PATHS.get(name)
    return path is not None and path.apply is not None


# -- whole batches ------------------------------------------------------------------------------
def to_magnitude(volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bench.perturbations.to_magnitude` in torch: (brain in [0, 1], background 0; mask).
    Masked reductions instead of boolean indexing, so nothing waits for the device."""
    mask = volume != 0
    lo = torch.where(mask, volume, torch.inf).amin()
    hi = torch.where(mask, volume, -torch.inf).amax()
    scale = torch.clamp(hi - lo, min=1e-6)                  # a tensor: true division, as numpy's
    return torch.where(mask, (volume - lo) / scale, torch.zeros_like(volume)), mask


def renormalise(perturbed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`bench.perturbations.renormalise` in torch: z-scored with the clean brain mask's
    mean and (population) std in float64, the background divided by the same std; an empty mask
    leaves the volume as it is."""
    out = perturbed.double()
    n = mask.sum()
    mean = torch.where(mask, out, 0.0).sum() / n
    std = torch.sqrt(torch.where(mask, (out - mean) ** 2, 0.0).sum() / n)
    std = torch.where(std == 0, torch.ones_like(std), std)
    scaled = torch.where(mask, (out - mean) / std, out / std)
    return torch.where(n > 0, scaled, out).float()


def apply_perturbation(volume: torch.Tensor, name: str, params: dict[str, Any], spacing_mm: float) -> torch.Tensor:
    """One (D, H, W) volume perturbed on its device, in the same normalised form as ``volume``."""
    if not on_device(name):
        raise MribenchError(f"perturbation {name} has no device implementation: {DEVICE_PATHS[name].why}")
    mag, mask = to_magnitude(volume.float())
    y = DEVICE_PATHS[name].apply(mag, params, float(spacing_mm))
    if y.shape != mag.shape:
        raise MribenchError(f"perturbation {name} returned shape {tuple(y.shape)} for {tuple(mag.shape)}")
    return renormalise(y, mask)


def perturb_batch(batch: torch.Tensor, name: str, params: Sequence[dict[str, Any]], spacing_mm: float) -> torch.Tensor:
    """A (B, 1, D, H, W) batch with volume ``i`` perturbed with ``params[i]``, on the batch's device.
    A new tensor: the batch may be a reader's reused buffer."""
    if batch.dim() != 5 or batch.shape[1] != 1 or len(params) != batch.shape[0]:
        raise MribenchError(f"perturb_batch needs (B, 1, D, H, W) and B parameter sets; got "
                            f"{tuple(batch.shape)} and {len(params)}")
    out = torch.stack([apply_perturbation(v[0], name, p, spacing_mm) for v, p in zip(batch, params)])[:, None]
    if not bool(torch.isfinite(out).all()):  # one wait per batch, not per volume
        raise MribenchError(f"perturbation {name} gave non-finite values on {batch.device}")
    return out
