"""`bench pretrain`: self-supervised pretraining on a cohort's pretraining pool only.

The pool is every subject of the cohort that sits in no val / test / external split of any of
the cohort's split files, so an SSL encoder never sees a subject it is later evaluated on. The
subject ids go into the encoder's card, which lets the harness flag any overlap with a task's
evaluated subjects (e.g. when a checkpoint pretrained on one cohort is run on another's splits).

The loop is method-agnostic: an :class:`SSLMethod` (in ``baselines/``) owns the network, the
views and the loss. Training is seeded (torch and numpy generators saved in every checkpoint),
checkpoints are written atomically every ``checkpoint_every`` steps, the loss of every step is
appended to ``loss.tsv``, and ``--resume`` continues from the last checkpoint with the same
random streams, so an interrupted run ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bench.atomic import atomic_write, atomic_write_bytes
from bench.data.cohort import Cohort
from bench.data.store import VolumeStore
from bench.errors import MribenchError
from bench.paths import cache_home, repo_root
from bench.progress import progress_bar


class SSLMethod(Protocol):
    """What a baseline provides for pretraining."""

    name: str
    sequences: tuple[str, ...]      # which scans of the pool it trains on
    input_space: str

    def network(self) -> torch.nn.Module: ...            # everything with trainable weights
    def loss(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor: ...
    def encoder_state(self) -> dict[str, torch.Tensor]: ...  # what the encoder loads for evaluation
    def card(self, pool: list[str], cohort: str, steps: int) -> dict: ...


def pretraining_pool(cohort: Cohort, split_dir: Path | None = None) -> list[str]:
    """Subjects of ``cohort`` in no val / test / external split of its split files."""
    import pandas as pd

    split_dir = split_dir or repo_root() / "splits" / cohort.name
    files = sorted(Path(split_dir).glob("*.tsv"))
    if not files:
        raise MribenchError(f"no split files under {split_dir}: make them first (bench splits make) so the "
                            "pretraining pool can leave out every evaluated subject")
    held_out: set[str] = set()
    for f in files:
        t = pd.read_csv(f, sep="\t", dtype=str)
        held_out |= set(t.loc[t["split"] != "train", "participant_id"])
    subjects = sorted(set(cohort.table["participant_id"]) - held_out)
    if not subjects:
        raise MribenchError(f"{cohort.name}: every subject is in a val/test/external split; no pretraining pool")
    return subjects


def default_out_dir(encoder: str, cohort: str) -> Path:
    return cache_home() / "checkpoints" / f"{encoder}-{cohort}"


@dataclass
class PretrainResult:
    out_dir: Path
    steps: int
    losses: list[float]
    encoder_path: Path
    card_path: Path
    seconds: float


def _atomic_torch_save(obj, path: Path) -> None:
    # 0644: checkpoints are meant to be shared (mkstemp's default is 0600)
    atomic_write(path, lambda f: torch.save(obj, f), mode=0o644)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)


def pretrain(method: SSLMethod, cohort: Cohort, *, steps: int, batch_size: int = 8, lr: float = 3e-4,
             seed: int = 0, out_dir: Path | None = None, resume: bool = False, checkpoint_every: int = 50,
             progress: bool = True, store: VolumeStore | None = None, command: str = "") -> PretrainResult:
    out_dir = Path(out_dir or default_out_dir(method.name, cohort.name))
    last = out_dir / "last.pt"
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise MribenchError(f"{out_dir} already holds a pretraining run; pass --resume to continue it "
                            "or --out for a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = pretraining_pool(cohort)
    t = cohort.table
    rows = t[t["participant_id"].isin(pool) & t["sequence"].isin(method.sequences)]
    if len(rows) < 2:
        raise MribenchError(f"{cohort.name}: the pretraining pool has {len(rows)} {'/'.join(method.sequences)} "
                            "scan(s); need at least 2")
    store = store or VolumeStore(cache_home() / "store")
    paths = rows["path"].tolist()
    store.prefetch(paths, method.input_space, progress=progress)

    net = method.network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    start_step, losses = 0, []
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        start_step, losses = int(state["step"]), list(state["losses"])
    elif resume:
        raise MribenchError(f"--resume: no checkpoint at {last}")

    log = out_dir / "loss.tsv"
    if start_step == 0:
        _atomic_text(log, "step\tloss\n")
    else:  # drop log lines written after the checkpoint we resume from
        kept = log.read_text().splitlines()[: start_step + 1] if log.is_file() else ["step\tloss"]
        _atomic_text(log, "\n".join(kept) + "\n")
    begin = time.perf_counter()
    batch = min(batch_size, len(paths))
    with progress_bar(progress) as bar:
        task = bar.add_task(f"pretraining {method.name} on {len(pool)} subjects", total=steps,
                            completed=start_step)
        for step in range(start_step + 1, steps + 1):
            net.train()
            pick = np.sort(rng.choice(len(paths), size=batch, replace=False))
            x = torch.from_numpy(np.stack([np.asarray(store.get(paths[i], method.input_space), np.float32)
                                           for i in pick]))[:, None]
            loss = method.loss(x, rng)
            if not torch.isfinite(loss):
                raise MribenchError(f"pretraining {method.name}: loss became {loss.item()} at step {step}; "
                                    f"lower --lr or resume from {last}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            with open(log, "a") as f:
                f.write(f"{step}\t{losses[-1]:.6f}\n")
            if step % checkpoint_every == 0 or step == steps:
                _atomic_torch_save({"step": step, "network": net.state_dict(), "optimiser": optimiser.state_dict(),
                                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                    "losses": losses}, last)
            bar.update(task, advance=1, description=f"pretraining {method.name} (loss {losses[-1]:.3f})")

    encoder_path = out_dir / "encoder.pt"
    _atomic_torch_save(method.encoder_state(), encoder_path)
    from bench.encoders.api import file_sha256

    card = method.card(pool, cohort.name, steps)
    card["checkpoint_sha256"] = file_sha256(encoder_path)
    card.setdefault("pretraining_data", {})["command"] = command
    card_path = encoder_path.with_suffix(".json")  # beside the weights: the encoder reads it from there
    _atomic_text(card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return PretrainResult(out_dir, steps, losses, encoder_path, card_path, time.perf_counter() - begin)
