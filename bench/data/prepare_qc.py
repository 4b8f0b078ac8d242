"""The QC figure of ``bench data prepare``: three orthogonal slices of a prepared scan with the
template's brain outline drawn over them, so a failed registration or a bias field left behind
is visible at a glance (the outline should hug the brain; the white matter should look even).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def qc_figure(volume: np.ndarray, template_mask: np.ndarray, out: Path, title: str = "") -> Path:
    """Write ``out`` (PNG): sagittal, coronal and axial slices through the mask's centre of mass.

    ``volume`` and ``template_mask`` are (x, y, z) arrays on the same RAS grid; slices are shown
    with the anterior / superior side up, as radiologists read them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.atomic import atomic_write

    mask = np.asarray(template_mask) > 0
    centre = np.round(np.argwhere(mask).mean(0)).astype(int) if mask.any() else np.array(volume.shape) // 2
    vmax = float(np.percentile(volume[mask], 99.5)) if mask.any() else float(volume.max() or 1.0)
    views = [("sagittal", volume[centre[0]], mask[centre[0]]),
             ("coronal", volume[:, centre[1]], mask[:, centre[1]]),
             ("axial", volume[:, :, centre[2]], mask[:, :, centre[2]])]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=90)
    for ax, (name, img, outline) in zip(axes, views):
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=vmax, interpolation="nearest")
        if outline.any() and not outline.all():
            ax.contour(outline.T.astype(float), levels=[0.5], colors="#ff3030", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title + "\nred: MNI152 template brain outline", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda f: fig.savefig(f, format="png"), mode=0o644)
    plt.close(fig)
    return out
