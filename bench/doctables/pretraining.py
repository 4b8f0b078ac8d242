"""Tables of pretraining runs from their committed cards and loss logs: the five checkpoints
``bench run`` uses (``baselines/weights/<encoder>-small.json``) and the runs of
``docs/pretraining-v2/`` (``<run>/encoder.json``, ``<run>/loss.tsv``).

Steps are the whole training lineage of a checkpoint (:mod:`bench.lineage`): a
warm-started run's card states only its own steps.
"""

from __future__ import annotations

import csv
from pathlib import Path

from bench.lineage import lineage
from bench.doctables.sources import Sources

#: docs/pretraining-v2's runs in the order of its table: (folder, label, recipe, loss window in
#: steps, decimals, note on the loss).
RUNS = (
    ("simclr3d", "`simclr3d`", "NT-Xent 0.5 + 512-projection memory queue", 100, 2,
     "chance ln 526 = 6.27; the queue fills over the first 64 steps"),
    ("mae3d", "`mae3d`", "75 % masked patches, MSE on the hidden ones", 100, 3, ""),
    ("dino2d", "`dino2d`", "DINO, EMA teacher, centring, multi-crop on axial slices", 100, 2, "ln 1024 = 6.93"),
    ("temporal", "`temporal`", "temporal order + predictive contrastive over a subject's scans", 100, 2, ""),
    ("simclr3d-anatomy-moco", "`simclr3d` round 2 (not kept)", "anatomy-preserving views + MoCo momentum key "
     "network (`--config small-anatomy-moco`)", 100, 2, "chance ln 520 = 6.25"),
    ("temporal-warm", "`temporal` round 2 (kept until round 4)", "the MoCo run's backbone (`--init-from`) + "
     "temporal's objectives", 50, 2, ""),
    ("simclr3d-vc", "`simclr3d` round 3", "round 1's run continued (`--init-from`) + VICReg variance-covariance "
     "term x 1 on the pooled embeddings", 100, 2, "the sum of both terms; see round 3"),
    ("temporal-vc", "`temporal` round 4", "round 3's simclr3d backbone (`--init-from`) + temporal's objectives + "
     "the term on the scans' embeddings, lr 3e-5", 50, 2, ""),
    ("dino2d-vc", "`dino2d` round 4 (not kept)", "round 1's whole run continued (`--init-from RUN/last.pt`) + the "
     "term on the global crops' class tokens", 50, 2, ""),
    ("mae3d-vc", "`mae3d` round 4 (not kept)", "round 1's whole run continued + the term on the `mid` read-out",
     50, 2, ""),
    ("simclr3d-vc-b32", "`simclr3d` round 5 (not kept)", "round 3 continued at **batch 32**", 25, 2, ""),
    ("simclr_vit3d-vc", "`simclr_vit3d` round 5 (kept; mean-token read-out)", "v1's SimCLR on the ViT + the "
     "512-projection queue + the term on the first token (`--config small-vc`), lr 3e-4", 100, 2,
     "chance ln 527 = 6.27, plus the term"),
    ("simclr_vit3d-vc-lr1e-4", "`simclr_vit3d` round 5 (not kept)", "the same at lr 1e-4", 100, 2, ""),
)
V2 = "docs/pretraining-v2"


def _all_cards(src: Sources) -> list[dict]:
    return list(src.cards().values())


def _schedule(data: dict) -> str:
    return str(data.get("lr_schedule", "-")).split(" (")[0]


def _wall(data: dict) -> str:
    wall = data.get("wall_time_s")
    return "-" if wall is None else f"{wall:,.0f} s"


def checkpoints_table(src: Sources) -> str:
    """The committed checkpoints: steps over the chain, batch, rate, pool, this run's time."""
    rows = ["| encoder | card | steps (over the init_from chain) | batch | peak lr, schedule | pool subjects | "
            "wall time (this run) | volumes/s |", "|---|---|---|---:|---|---:|---:|---:|"]
    for path, card in src.cards().items():
        if not path.startswith("baselines/weights/"):
            continue
        data = card.get("pretraining_data") or {}
        encoder = Path(path).stem.removesuffix("-small")
        rows.append(f"| `{encoder}` | {card.get('name')} | {lineage(card, _all_cards(src)).describe()} | "
                    f"{data.get('batch_size', '-')} | {data.get('lr', '-'):g}, {_schedule(data)} | "
                    f"{len(data.get('subjects') or [])} | {_wall(data)} | {data.get('volumes_per_s', '-')} |")
    return "\n".join(rows) + (
        "\n\nFrom each checkpoint's card (`baselines/weights/<encoder>-small.json`); steps add up the cards of its "
        "`init_from` chain (the card itself states only its own run's).")


def loss_windows(path: Path, window: int) -> tuple[float, float]:
    """Mean loss over the first and over the last ``window`` logged steps of a ``loss.tsv``."""
    with path.open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f, delimiter="\t")]
    head, tail = losses[:window], losses[-window:]
    return sum(head) / len(head), sum(tail) / len(tail)


def runs_table(src: Sources) -> str:
    """docs/pretraining-v2's runs: recipe, steps over the chain, schedule, time, loss."""
    cards = src.cards()
    rows = ["| run | recipe (small config) | steps (over the init_from chain) | schedule | wall time (this run) | "
            "volumes/s | pretext loss, first -> last 100 steps |", "|---|---|---|---|---:|---:|---|"]
    for folder, label, recipe, window, digits, note in RUNS:
        card = cards.get(f"{V2}/{folder}/encoder.json")
        if card is None:
            continue
        data = card.get("pretraining_data") or {}
        first, last = loss_windows(src.root / V2 / folder / "loss.tsv", window)
        extra = [f"first / last {window}"] if window != 100 else []
        extra += [note] if note else []
        loss = f"{first:.{digits}f} -> {last:.{digits}f}" + (f" ({'; '.join(extra)})" if extra else "")
        rows.append(f"| {label} | {recipe} | {lineage(card, _all_cards(src)).describe()} | {_schedule(data)} | "
                    f"{_wall(data)} | {data.get('volumes_per_s', '-')} | {loss} |")
    return "\n".join(rows)
