"""Pretraining loss curves: one figure per run, from the ``loss.tsv`` that ``bench pretrain``
writes beside its checkpoints, plus the first/last-window means the README quotes.

    python benchmarks/pretraining_curves.py RUN_DIR [RUN_DIR ...] --out docs/figures/pretraining

Each RUN_DIR holds ``loss.tsv`` and ``encoder.json`` (the card names the encoder, steps and
throughput). The figure shows every step's loss and a trailing mean over 4 % of the run; the table printed
gives the mean over the first and the last ``--window`` steps, which is what the README compares,
since single steps of batch 8 are noisy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def window_means(losses: np.ndarray, window: int) -> tuple[float, float]:
    """Mean loss over the first and the last ``window`` steps (the whole run if shorter)."""
    w = max(1, min(window, len(losses)))
    return float(np.mean(losses[:w])), float(np.mean(losses[-w:]))


def moving_mean(losses: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` steps (shorter at the start, never padded)."""
    c = np.cumsum(np.insert(losses.astype(float), 0, 0.0))
    idx = np.arange(1, len(losses) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_run(run: Path, out_dir: Path, window: int) -> tuple[str, float, float, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = pd.read_csv(run / "loss.tsv", sep="\t")
    card_file = run / "encoder.json"  # an interrupted run has no card yet: named by its folder
    card = json.loads(card_file.read_text()) if card_file.is_file() else {"name": run.name,
                                                                          "ssl_method": "stopped run, no card"}
    name, data = card["name"], card.get("pretraining_data", {})
    losses = log["loss"].to_numpy()
    first, last = window_means(losses, window)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(log["step"], losses, lw=0.5, alpha=0.35, color="tab:blue", label="step")
    smooth = max(5, len(losses) // 25)  # the drawn trend; the quoted means use --window
    ax.plot(log["step"], moving_mean(losses, smooth), lw=1.6, color="tab:blue", label=f"trailing mean of {smooth} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("pretext loss")
    ax.set_title(f"{name}: {card.get('ssl_method', '')[:60]}", fontsize=9)
    ax.text(0.99, 0.97, f"batch {data.get('batch_size', '?')}, {len(losses)} steps, "
            f"{data.get('volumes_per_s', '?')} vol/s", transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png")
    plt.close(fig)
    return name, first, last, len(losses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--window", type=int, default=250)
    args = parser.parse_args(argv)
    print("| encoder | steps | loss, first window | loss, last window |\n|---|---|---|---|")
    for run in args.runs:
        name, first, last, n = plot_run(run, args.out, args.window)
        print(f"| {name} | {n} | {first:.3f} | {last:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
