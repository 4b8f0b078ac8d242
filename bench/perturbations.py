"""Seeded acquisition artefacts at five severities, for the robustness protocol.

Every perturbation is a deterministic MONAI or TorchIO transform; this module only decides its
parameters. Those come from a hash of (seed, subject, session, sequence, perturbation) plus the
severity's documented level, never from a library's global RNG, so a scan gets the same artefact in any process, in any order,
on any machine, and a result record needs only the seed and the scans to recompute them
(:func:`draw_all`, pinned by :func:`parameters_digest`).

Perturbations act in the encoder's input space, on the stored (resampled) volume, which is first
mapped to a non-negative magnitude image (brain rescaled to [0, 1], background 0) because the
k-space and noise models assume magnitudes. Afterwards the volume is normalised again with the
clean scan's brain mask: brain voxels are z-scored, background voxels are divided by the same
standard deviation, so the background stays 0 where an artefact left it 0 and shows the artefact
where it did not. Perturbing before resampling, in the native space, would be closer to the
scanner, but every perturbed scan would then need its own resampling pass, the dominant cost.

Levels (``LEVELS``) are calibrated on the synthetic cohort's 64^3 / 3 mm volumes so that severity
5 is badly degraded but the anatomy is still recognisable; ``bench perturb show`` draws them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bench.errors import MribenchError

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Perturbation:
    """One artefact family: what each severity means, and how to draw and apply its parameters."""

    name: str
    description: str
    levels: tuple[float, float, float, float, float]   # the documented magnitude per severity
    unit: str
    draw: Callable[[np.random.Generator, float], dict[str, Any]]
    apply: Callable[[torch.Tensor, dict[str, Any], float], torch.Tensor]


# -- parameter draws: the magnitude is the level; the rng picks directions, axes and places -------
def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=n)
    return v / np.linalg.norm(v)


def _draw_gamma(rng, level):
    return {"gamma": float(np.exp(level * (1 if rng.random() < 0.5 else -1)))}


def _draw_bias(rng, level):
    # 20 coefficients of an order-3 polynomial; fixed L2 norm so the level sets the strength.
    return {"coefficients": (level * _unit(rng, 20)).round(6).tolist(), "order": 3}


def _draw_gibbs(rng, level):
    return {"alpha": float(level)}


def _draw_noise(rng, level):
    return {"std": float(level), "seed": int(rng.integers(0, 2**31 - 1))}


def _draw_motion(rng, level):
    # One rigid movement of size ``level`` (degrees of rotation and mm of translation, random
    # directions) halfway through the acquisition. In TorchIO's model the k-space segment holding
    # the centre decides where the head appears; a movement near the middle of the acquisition
    # splits the centre between two positions, the visible double-contour artefact. Movements
    # early or late only touch high frequencies and barely show at 3 mm.
    return {"degrees": [(level * _unit(rng, 3)).round(4).tolist()],
            "translation": [(level * _unit(rng, 3)).round(4).tolist()],
            "times": [round(float(rng.uniform(0.47, 0.53)), 4)]}


def _draw_ghosting(rng, level):
    return {"num_ghosts": 4, "axis": int(rng.integers(0, 3)),
            "intensity": float(level), "restore": 0.02}


def _draw_spike(rng, level):
    return {"positions": rng.uniform(0.1, 0.9, size=(1, 3)).round(4).tolist(), "intensity": float(level)}


def _draw_downsample(rng, level):
    return {"axis": int(rng.integers(0, 3)), "factor": float(level)}


def _draw_blur(rng, level):
    return {"std_mm": float(level)}


# -- application: library transforms only --------------------------------------------------------
def _tio_image(x: torch.Tensor, spacing: float):
    import torchio as tio

    return tio.ScalarImage(tensor=x, affine=np.diag([spacing, spacing, spacing, 1.0]))


def _tio(transform, x: torch.Tensor, spacing: float) -> torch.Tensor:
    return transform(_tio_image(x, spacing)).data.float()


def _apply_gamma(x, p, spacing):
    import torchio as tio

    return _tio(tio.Gamma(p["gamma"]), x, spacing)


def _apply_bias(x, p, spacing):
    import torchio as tio

    return _tio(tio.BiasField(p["coefficients"], p["order"]), x, spacing)


def _apply_gibbs(x, p, spacing):
    from monai.transforms import GibbsNoise

    return torch.as_tensor(GibbsNoise(alpha=p["alpha"])(x)).float()


def _apply_gaussian(x, p, spacing):
    import torchio as tio

    return _tio(tio.Noise(mean=0.0, std=p["std"], seed=p["seed"]), x, spacing)


def _apply_rician(x, p, spacing):
    from monai.transforms import RandRicianNoise

    t = RandRicianNoise(prob=1.0, std=p["std"], sample_std=False)
    t.set_random_state(seed=p["seed"])
    return torch.as_tensor(t(x)).float()


def _apply_motion(x, p, spacing):
    import torchio as tio

    t = tio.Motion(np.array(p["degrees"]), np.array(p["translation"]), np.array(p["times"]), "linear")
    return _tio(t, x, spacing)


def _apply_ghosting(x, p, spacing):
    import torchio as tio

    return _tio(tio.Ghosting(p["num_ghosts"], p["axis"], p["intensity"], p["restore"]), x, spacing)


def _apply_spike(x, p, spacing):
    import torchio as tio

    return _tio(tio.Spike(np.array(p["positions"]), p["intensity"]), x, spacing)


def _apply_downsample(x, p, spacing):
    """Thick slices: anti-aliased resampling to ``factor`` x the spacing along one axis, and back."""
    import torchio as tio

    image = _tio_image(x, spacing)
    target = [spacing] * 3
    target[p["axis"]] *= p["factor"]
    thick = tio.Resample(tuple(target), image_interpolation="linear", antialias=True)(image)
    back = tio.Resample((image.spatial_shape, image.affine), image_interpolation="linear")(thick)
    return back.data.float()


def _apply_blur(x, p, spacing):
    import torchio as tio

    s = p["std_mm"]
    return _tio(tio.Blur((s, s, s)), x, spacing)


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("contrast", "gamma curve on the magnitude image, brightening or darkening at random",
                 (0.15, 0.3, 0.5, 0.7, 0.95), "|log gamma|", _draw_gamma, _apply_gamma),
    Perturbation("bias_field", "smooth multiplicative field, exp of an order-3 polynomial",
                 (0.25, 0.5, 0.8, 1.2, 1.7), "L2 norm of the 20 coefficients", _draw_bias, _apply_bias),
    Perturbation("gibbs", "Gibbs ringing from k-space truncation (MONAI GibbsNoise)",
                 (0.2, 0.35, 0.45, 0.55, 0.65), "alpha (share of k-space removed)", _draw_gibbs, _apply_gibbs),
    Perturbation("gaussian_noise", "additive Gaussian noise",
                 (0.02, 0.04, 0.07, 0.1, 0.14), "std / brain intensity range", _draw_noise, _apply_gaussian),
    Perturbation("rician_noise", "Rician noise, the magnitude of complex Gaussian noise",
                 (0.02, 0.04, 0.07, 0.1, 0.14), "std / brain intensity range", _draw_noise, _apply_rician),
    Perturbation("motion", "a rigid movement halfway through the acquisition, merged in k-space",
                 (1.0, 2.0, 3.5, 5.0, 7.0), "degrees and mm of the movement", _draw_motion, _apply_motion),
    Perturbation("ghosting", "periodic ghosts along the phase-encode axis",
                 (0.1, 0.2, 0.35, 0.5, 0.7), "ghost intensity (share of k-space maximum)",
                 _draw_ghosting, _apply_ghosting),
    Perturbation("spike", "a k-space spike: stripes across the image (herringbone)",
                 (0.2, 0.4, 0.7, 1.0, 1.5), "spike / k-space maximum", _draw_spike, _apply_spike),
    Perturbation("downsample", "thick slices along one axis, interpolated back",
                 (1.5, 2.0, 2.5, 3.0, 4.0), "slice thickness factor", _draw_downsample, _apply_downsample),
    Perturbation("blur", "isotropic Gaussian blur", (1.0, 1.75, 2.5, 3.25, 4.0), "std in mm",
                 _draw_blur, _apply_blur),
)}


def get_perturbation(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise MribenchError(f"unknown perturbation '{name}'; choose from {', '.join(PERTURBATIONS)}") from None


def scan_rng(seed: int, subject: str, session: str, sequence: str, perturbation: str) -> np.random.Generator:
    """The generator for one scan's random choices: a hash of what identifies the scan and draw.

    Severity is deliberately not in the hash: it sets the magnitude (``levels``), while the
    directions, axes, positions and noise fields come from this generator and are therefore the
    same at every severity of a scan. A severity curve then measures the effect of magnitude
    alone; with fresh directions per level, a bias field or a motion at level 3 could by chance
    be milder than at level 2.
    """
    key = f"{seed}|{subject}|{session}|{sequence}|{perturbation}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def draw_parameters(name: str, severity: int, *, seed: int, subject: str, session: str,
                    sequence: str = "") -> dict[str, Any]:
    """This scan's parameters at ``severity``: a pure function of (seed, scan, perturbation, severity)."""
    p = get_perturbation(name)
    if severity not in SEVERITIES:
        raise MribenchError(f"severity must be one of {SEVERITIES}, got {severity}")
    rng = scan_rng(seed, subject, session, sequence, name)
    return {"severity": severity, "level": p.levels[severity - 1], **p.draw(rng, p.levels[severity - 1])}


def to_magnitude(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude image with the brain in [0, 1] and background 0, brain mask)."""
    v = np.asarray(volume, dtype=np.float32)
    mask = v != 0
    if not mask.any():
        return np.zeros_like(v), mask
    lo, hi = v[mask].min(), v[mask].max()
    mag = np.where(mask, (v - lo) / max(float(hi - lo), 1e-6), 0.0).astype(np.float32)
    return mag, mask


def renormalise(perturbed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score with the clean brain mask's statistics; background scaled by the same std."""
    out = np.asarray(perturbed, dtype=np.float64)
    if not mask.any():
        return out.astype(np.float32)
    brain = out[mask]
    std = brain.std() or 1.0
    return np.where(mask, (out - brain.mean()) / std, out / std).astype(np.float32)


def apply_perturbation(volume: np.ndarray, name: str, params: dict[str, Any], spacing_mm: float) -> np.ndarray:
    """The perturbed volume in the same (normalised) form as ``volume``."""
    mag, mask = to_magnitude(volume)
    x = torch.from_numpy(mag)[None]
    y = get_perturbation(name).apply(x, params, float(spacing_mm))
    y = np.asarray(y, dtype=np.float32)[0]
    if y.shape != mag.shape or not np.isfinite(y).all():
        raise MribenchError(f"perturbation {name} returned shape {y.shape} or non-finite values")
    return renormalise(y, mask)


def perturb_scan(volume: np.ndarray, name: str, severity: int, *, seed: int, subject: str, session: str,
                 sequence: str = "", spacing_mm: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw this scan's parameters and apply them: (perturbed volume, parameters)."""
    params = draw_parameters(name, severity, seed=seed, subject=subject, session=session, sequence=sequence)
    return apply_perturbation(volume, name, params, spacing_mm), params


# -- the parameters of a robustness record's scans: recomputed, not stored ------------------------
def scan_label(subject: str, session: str, sequence: str) -> str:
    """A scan's key in a parameters block: ``subject_session_sequence``."""
    return f"{subject}_{session}_{sequence}"


def draw_all(scans, seed: int, perturbations, severities) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{perturbation: {severity: {scan: parameters}}}`` of ``scans`` (``[subject, session,
    sequence]`` each): the parameters block a robustness record is pinned to (:func:`parameters_digest`)."""
    return {name: {str(sev): {scan_label(sub, ses, seq): draw_parameters(name, int(sev), seed=seed, subject=sub,
                                                                         session=ses, sequence=seq)
                              for sub, ses, seq in scans}
                   for sev in severities}
            for name in perturbations}


def parameters_digest(parameters: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a parameters block."""
    text = json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def block_scans(block: dict) -> list[list[str]]:
    """The evaluated scans of a robustness block: its ``scans``, or (records written before the
    parameters were left out) the scan keys of its ``parameters``, read as subject_session_sequence.
    A malformed entry is a ``MribenchError``."""
    if "scans" in block:
        scans = block["scans"]
        if not isinstance(scans, list) or not all(
                isinstance(s, list) and len(s) == 3 and all(isinstance(x, str) for x in s) for s in scans):
            raise MribenchError("robustness scans are not [subject, session, sequence] lists")
        return [list(s) for s in scans]
    keys = {str(k) for by_sev in (block.get("parameters") or {}).values() if isinstance(by_sev, dict)
            for per_scan in by_sev.values() if isinstance(per_scan, dict) for k in per_scan}
    parts = [k.split("_") for k in sorted(keys)]
    if any(len(p) != 3 for p in parts):
        raise MribenchError("robustness parameters name a scan that is not subject_session_sequence")
    return parts


def block_perturbations(block: dict) -> tuple[int, list[str], list[int]]:
    """(perturbation seed, perturbations, severities) a robustness block says it was computed with
    (records written before ``severities`` was recorded used all of :data:`SEVERITIES`)."""
    try:
        seed = int(block["perturbation_seed"])
        names = [str(n) for n in block["levels"]]
        severities = [int(s) for s in block.get("severities", SEVERITIES)]
    except (KeyError, TypeError, ValueError):
        raise MribenchError("robustness block lacks its perturbation seed, levels or severities") from None
    return seed, names, severities


def block_parameters(block: dict) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Every evaluated scan's parameters for every perturbation x severity of a robustness block,
    recomputed with :func:`draw_parameters` (``bench robustness params RECORD``)."""
    seed, names, severities = block_perturbations(block)
    return draw_all(block_scans(block), seed, names, severities)


def block_digest(block: dict) -> str | None:
    """The parameters' SHA-256 a block names: ``parameters_sha256``, or that of its ``parameters``
    (records written before); None when it names neither."""
    if "parameters_sha256" in block:
        return str(block["parameters_sha256"])
    return parameters_digest(block["parameters"]) if isinstance(block.get("parameters"), dict) else None


def slim_block(block: dict) -> dict | None:
    """A robustness block written with its ``parameters``, with them replaced by ``scans``,
    ``severities`` and ``parameters_sha256``; None (keep it as it is) when it has none, or they are
    not exactly what the recomputation gives (``bench verify`` then says so)."""
    if not isinstance(block, dict) or not isinstance(block.get("parameters"), dict):
        return None
    try:
        recomputed = block_parameters(block)
    except MribenchError:
        return None
    if parameters_digest(recomputed) != parameters_digest(block["parameters"]):
        return None
    _, _, severities = block_perturbations(block)
    slim = {k: v for k, v in block.items() if k != "parameters"}
    return {**slim, "severities": severities, "scans": sorted(block_scans(block)),
            "parameters_sha256": parameters_digest(recomputed)}
