"""`bench perturb show`: what each severity of an artefact does to a scan, as one figure.

Rows are (perturbation, view) with mid-axial and mid-coronal slices; columns are the clean scan
and each requested severity. Panels show the magnitude image right after the artefact, before
the input space's re-normalisation, the way a radiologist would see the scan; all share the
clean brain's grey-level window, so intensity changes (contrast, bias field) show as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import MribenchError
from bench.perturbations import SEVERITIES, draw_parameters, get_perturbation, to_magnitude

VIEWS = ("axial", "coronal")


def _slice(volume: np.ndarray, view: str) -> np.ndarray:
    """Mid slice in RAS voxel order (x, y, z), oriented for display (anterior / superior up)."""
    if view == "axial":
        return np.rot90(volume[:, :, volume.shape[2] // 2])
    return np.rot90(volume[:, volume.shape[1] // 2, :])


def perturbation_figure(volume: np.ndarray, *, perturbations: list[str], severities: list[int], out: Path,
                        spacing_mm: float, subject: str, session: str, sequence: str, seed: int = 0,
                        title: str | None = None) -> dict[str, dict[int, dict]]:
    """Write the figure to ``out`` (.png or .svg); return the parameters drawn for each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for s in severities:
        if s not in SEVERITIES:
            raise MribenchError(f"severity must be one of {SEVERITIES}, got {s}")
    for name in perturbations:
        get_perturbation(name)
    rows = [(name, view) for name in perturbations for view in VIEWS]
    cols = ["clean"] + [f"severity {s}" for s in severities]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.6 * len(cols), 1.6 * len(rows) + 0.4),
                             squeeze=False)
    params: dict[str, dict[int, dict]] = {}
    import torch

    magnitude, mask = to_magnitude(volume)
    vmin, vmax = 0.0, float(np.percentile(magnitude[mask], 99.5)) if mask.any() else 1.0
    for name in perturbations:
        perturbed = {}
        for s in severities:
            p = draw_parameters(name, s, seed=seed, subject=subject, session=session, sequence=sequence)
            artefact = get_perturbation(name).apply(torch.from_numpy(magnitude)[None], p, float(spacing_mm))
            perturbed[s] = np.asarray(artefact, dtype=np.float32)[0]
            params.setdefault(name, {})[s] = p
        for view in VIEWS:
            r = rows.index((name, view))
            panels = [magnitude] + [perturbed[s] for s in severities]
            for c, panel in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(_slice(panel, view), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{name}\n{view}", fontsize=7)
    fig.suptitle(title or f"{subject} {session} {sequence}: perturbations (seed {seed})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return params
