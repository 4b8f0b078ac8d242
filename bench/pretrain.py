"""`bench pretrain`: self-supervised pretraining on a cohort's pretraining pool only.

The pool is every subject of the cohort that sits in no val / test / external split of any of
the cohort's split files, so an SSL encoder never sees a subject it is later evaluated on. The
subject ids go into the encoder's card, which lets the harness flag any overlap with a task's
evaluated subjects (e.g. when a checkpoint pretrained on one cohort is run on another's splits).

The loop is method-agnostic: an :class:`SSLMethod` (in ``baselines/``) owns the network, the
views and the loss. Training is seeded (torch and numpy generators saved in every checkpoint),
checkpoints are written atomically every ``checkpoint_every`` steps, the loss of every step is
appended to ``loss.tsv``, and ``--resume`` continues from the last checkpoint with the same
random streams (and an fp16 run's gradient-scaler state), in the precision the checkpoint records,
so an interrupted run ends where an uninterrupted one would.

Under torchrun (``bench pretrain --nproc N``, see :mod:`bench.distributed`) the same loop is
data-parallel: every rank draws the same global batch from the shared stream and trains on its
own shard of it (rank r takes scans r, r+N, ...) through DistributedDataParallel, views and masks
come from a stream per rank, the logged loss is the mean over ranks, and rank 0 alone writes the
log, the checkpoints (with every rank's random streams, so ``--resume`` is exact) and the weights.
With one process nothing changes: same streams, same checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bench import distributed as ddp
from bench.atomic import atomic_write, atomic_write_bytes
from bench.data.cohort import Cohort
from bench.data.store import VolumeStore
from bench.devices import DEFAULT_PRECISION, Compute, autocast, check_can_train, compute_from, grad_scaler
from bench.errors import MribenchError
from bench.paths import cache_home, splits_root
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
    # optional: draw_batch(rows, load, rng, batch_size) -> batch given to loss (default: random scans);
    # after_step(step, total_steps) after each optimiser step (EMA teachers, schedules)


_RECIPES = None


def ssl_recipes():
    """The SSL recipes (:class:`SSLMethod` classes) by encoder name, as a frozen
    :class:`~bench.registry.Registry`: those the registered encoders name (``recipe``), so each
    name is declared once, with its encoder."""
    global _RECIPES
    if _RECIPES is None:
        from bench.encoders.api import ssl_encoders
        from bench.registry import Registry

        recipes = Registry("pretraining recipe")
        for name, encoder_cls in ssl_encoders().items():
            recipes.register(name, encoder_cls.recipe)
        _RECIPES = recipes.freeze()
    return _RECIPES


def pretraining_pool(cohort: Cohort, split_dir: Path | None = None) -> list[str]:
    """Subjects of ``cohort`` in no val / test / external split of its split files."""
    import pandas as pd

    split_dir = split_dir or splits_root() / cohort.name
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


# -- last.pt: the resumable state, without pickled Python objects ----------------------------------
#: ``format`` of the JSON part of ``last.pt``; bump when the layout changes
STATE_FORMAT = "mribench-pretrain-state/1"


def _rng_json(state: dict) -> dict:
    """A numpy bit generator's state as JSON-ready data (PCG64's is ints already; others hold arrays)."""
    return {k: _rng_json(v) if isinstance(v, dict) else ({"ndarray": v.tolist(), "dtype": str(v.dtype)}
                                                         if isinstance(v, np.ndarray) else v)
            for k, v in state.items()}


def _rng_from_json(state: dict) -> dict:
    return {k: (np.asarray(v["ndarray"], dtype=v["dtype"]) if set(v) == {"ndarray", "dtype"}
                else _rng_from_json(v)) if isinstance(v, dict) else v for k, v in state.items()}


def write_pretrain_state(path: Path, *, step: int, network: dict, optimiser: dict, numpy_rng: dict,
                         torch_rng: torch.Tensor, losses: list[float], ranks: list[dict] | None = None,
                         precision: str = DEFAULT_PRECISION, grad_scaler: dict | None = None) -> None:
    """Write ``last.pt`` atomically: tensors (weights, optimiser moments, torch RNG states as uint8
    tensors) and plain containers only, with everything else (step, losses, numpy generator states,
    process count, ``--precision``, and an fp16 run's gradient-scaler state: its scale and growth
    tracker, plain numbers) as one JSON string inside, so :func:`read_pretrain_state` loads it with
    ``weights_only=True`` and a checkpoint can never carry code."""
    meta = {"format": STATE_FORMAT, "step": int(step), "losses": [float(x) for x in losses],
            "numpy_rng": _rng_json(numpy_rng), "world_size": len(ranks) if ranks else 1,
            "ranks_numpy_rng": [_rng_json(r["numpy_rng"]) for r in ranks or []], "precision": precision,
            **({"grad_scaler": dict(grad_scaler)} if grad_scaler else {})}
    tensors = {"network": network, "optimiser": optimiser, "torch_rng": torch_rng,
               "ranks_torch_rng": [r["torch_rng"] for r in ranks or []],
               "ranks_cuda_rng": [r.get("cuda_rng") for r in ranks or []]}
    _atomic_torch_save({"meta": json.dumps(meta), **tensors}, path)


def read_pretrain_state(path: Path) -> dict:
    """``last.pt`` as the training loop uses it (step, network, optimiser, numpy_rng, torch_rng,
    losses, world_size, precision (fp32 when the checkpoint predates it), an fp16 run's
    ``grad_scaler`` state and, under DDP, each rank's streams in ``ranks``), loaded with
    ``weights_only=True``; anything else in the file is a one-line error."""
    from bench.encoders.api import load_torch_file

    raw = load_torch_file(path, "pretraining checkpoint")
    if isinstance(raw, dict) and "meta" not in raw and {"step", "network", "numpy_rng"} <= set(raw):
        return raw  # the layout before STATE_FORMAT: plain containers too, so it loaded just as safely
    try:
        meta = json.loads(raw["meta"])
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        state = {"step": int(meta["step"]), "losses": list(meta["losses"]), "network": raw["network"],
                 "optimiser": raw["optimiser"], "numpy_rng": _rng_from_json(meta["numpy_rng"]),
                 "torch_rng": raw["torch_rng"], "world_size": int(meta["world_size"]),
                 "precision": str(meta.get("precision", DEFAULT_PRECISION)), **_scaler_json(meta)}
        ranks = [{"numpy_rng": _rng_from_json(n), "torch_rng": t} for n, t in
                 zip(meta["ranks_numpy_rng"], raw["ranks_torch_rng"], strict=True)]
        for r, cuda in zip(ranks, raw["ranks_cuda_rng"]):
            if cuda is not None:
                r["cuda_rng"] = cuda
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise MribenchError(f"{path}: not a pretraining checkpoint of this mribench ({type(e).__name__}: {e}); "
                            "start a new run with --out") from None
    return {**state, **({"ranks": ranks} if ranks else {})}


def _scaler_json(meta: dict) -> dict:
    """The ``grad_scaler`` entry of a checkpoint's JSON part, checked to be what GradScaler's
    ``state_dict`` gives (names to numbers); nothing when the run had no scaler (fp32, bf16)."""
    scaler = meta.get("grad_scaler")
    if scaler is None:
        return {}
    if not isinstance(scaler, dict) or not all(isinstance(v, (int, float)) for v in scaler.values()):
        raise ValueError(f"grad_scaler is {type(scaler).__name__}, not a dict of numbers")
    return {"grad_scaler": scaler}


#: learning-rate schedules of ``bench pretrain --lr-schedule``
LR_SCHEDULES = ("cosine", "constant")


def learning_rate(step: int, steps: int, peak: float, schedule: str = "cosine") -> float:
    """The learning rate of optimiser step ``step`` (1-based) of ``steps``.

    ``cosine``: a linear warm-up over the first 5 % of the steps, then a cosine decay to zero at
    the last step, as SimCLR, MAE and DINO train. Short SSL runs here need it: at a constant rate
    the NT-Xent of the first 1,500-step simclr3d run fell to 4.9 by step 700 and climbed back to
    5.5 (README, pretraining curves). A pure function of the step, so a resumed run sets the same
    rates as an uninterrupted one without any scheduler state in the checkpoint.
    """
    if schedule == "constant":
        return peak
    if schedule != "cosine":
        raise MribenchError(f"unknown learning-rate schedule '{schedule}'; choose from {', '.join(LR_SCHEDULES)}")
    warmup = max(1, steps // 20)
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return float(peak * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))


def _process(device: str | None) -> ddp.DistInfo:
    """Rank, world size and device from torchrun (bench pretrain --nproc N; each rank its own GPU when
    there are GPUs), else rank 0 of 1 on ``device`` (``--device``; the CPU when None)."""
    info = ddp.setup()
    if device is not None and not info.enabled:
        info = dataclasses.replace(info, device=torch.device(device))
    return info


def pretrain(method: SSLMethod, cohort: Cohort, *, steps: int, batch_size: int = 8, lr: float = 3e-4,
             lr_schedule: str = "cosine", seed: int = 0, out_dir: Path | None = None, resume: bool = False,
             checkpoint_every: int = 50, progress: bool = True, store: VolumeStore | None = None,
             command: str = "", init_from: Path | None = None, device: str | None = None,
             precision: str = "fp32") -> PretrainResult:
    out_dir = Path(out_dir or default_out_dir(method.name, cohort.name))
    last = out_dir / "last.pt"
    info = _process(device)
    compute = _compute(info, precision)
    state = _check_out_dir(out_dir, last, resume, info, precision)
    _check_before_work(init_from, state, steps, lr, lr_schedule)
    pool, rows = _pool_rows(method, cohort)
    store = store or VolumeStore(cache_home() / "store")
    paths = rows["path"].tolist()
    if info.is_main:  # one process preprocesses; the others then read the store
        store.prefetch(paths, method.input_space, progress=progress)
    ddp.barrier(info)

    net = method.network().to(info.device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)  # batch draws: one stream, identical on every rank
    # views and masks: one stream per rank under DDP (the same objects as before with one process)
    own_rng = rng if not info.enabled else np.random.default_rng((seed, info.rank))
    torch.manual_seed(seed if not info.enabled else int(np.random.SeedSequence((seed, info.rank)).generate_state(1)[0]))
    start_step, losses = _restore(state, net, optimiser, rng, own_rng, info, last)
    warm_start = _warm_start(init_from, method, net, out_dir, start_step)

    log = _start_log(out_dir / "loss.tsv", start_step, info)
    begin = time.perf_counter()
    batch = _shared_batch(min(batch_size, len(paths)), info)
    forward = _data_parallel(method, net, info)
    scaler = resumed_scaler(compute, state)
    with progress_bar(progress and info.is_main) as bar:
        task = bar.add_task(f"pretraining {method.name} on {len(pool)} subjects", total=steps,
                            completed=start_step)
        for step in range(start_step + 1, steps + 1):
            net.train()
            x = _draw(method, rows, paths, store, rng, own_rng, batch, info)
            with autocast(compute, info.device.type):
                loss = forward(_to_device(x, info.device), own_rng)
            mean_loss = ddp.mean_over_ranks(info, loss.detach())  # what every rank logs and checks
            if not torch.isfinite(mean_loss):
                raise MribenchError(f"pretraining {method.name}: loss became {mean_loss.item()} at step {step}; "
                                    f"lower --lr or resume from {last}")
            _optimiser_step(optimiser, loss, learning_rate(step, steps, lr, lr_schedule), scaler)
            if hasattr(method, "after_step"):  # optional hook: e.g. DINO's teacher EMA and schedules
                method.after_step(step, steps)
            losses.append(float(mean_loss))
            _log_step(log, step, losses[-1], info)
            if step % checkpoint_every == 0 or step == steps:
                _checkpoint(last, step, net, optimiser, rng, own_rng, losses, info, scaler=scaler,
                            precision=precision)
            bar.update(task, advance=1, description=f"pretraining {method.name} (loss {losses[-1]:.3f})")
    trained = time.perf_counter() - begin
    cost = run_cost(batch, lr, lr_schedule, trained, steps - start_step, precision)
    encoder_path, card_path = _write_encoder(method, out_dir, pool, cohort.name, steps, cost, command, info,
                                             warm_start)
    ddp.barrier(info)  # the weights exist for every rank that returns
    ddp.teardown(info)
    return PretrainResult(out_dir, steps, losses, encoder_path, card_path, time.perf_counter() - begin)


def _shared_batch(batch: int, info) -> int:
    """The batch, when the processes of a distributed run can share it (at least 2 scans each)."""
    if info.enabled and (batch % info.world_size or batch // info.world_size < 2):
        raise MribenchError(f"a batch of {batch} scans cannot be shared by {info.world_size} processes: use a "
                            f"--batch-size that is a multiple of --nproc, with at least 2 scans per process")
    return batch


def _log_step(log: Path, step: int, loss: float, info) -> None:
    """Append one step's loss to loss.tsv (the main process writes it)."""
    if info.is_main:
        with open(log, "a") as f:
            f.write(f"{step}\t{loss:.6f}\n")


def run_cost(batch: int, lr: float, lr_schedule: str, seconds: float, steps_run: int,
             precision: str = DEFAULT_PRECISION) -> dict:
    """What a run took, for its card: batch, learning rate and schedule, wall time, throughput, and
    the autocast precision when it is not fp32 (so an fp32 run's card is what it was before)."""
    cost = {"batch_size": batch, "lr": lr, "lr_schedule": lr_schedule, "wall_time_s": round(seconds, 1),
            "steps_this_run": steps_run,
            "volumes_per_s": round(steps_run * batch / seconds, 2) if seconds > 0 else None}
    return cost if precision == DEFAULT_PRECISION else {**cost, "precision": precision}


def _compute(info: ddp.DistInfo, precision: str) -> Compute:
    """The process's device and ``--precision``, checked by the function ``bench run`` checks them with
    (:func:`bench.devices.compute_from`: fp16 on a GPU only, with a gradient scaler), and bf16 on a CPU
    only where its conv3d gradients hold (:func:`bench.devices.check_can_train`)."""
    compute = compute_from(str(info.device), precision)
    check_can_train(compute)
    return compute


def _optimiser_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, rate: float, scaler=None) -> None:
    """Back-propagate ``loss`` and step every parameter group at the scheduled learning ``rate``;
    through ``scaler`` when it is enabled (fp16), the plain backward and step otherwise (fp32's
    steps stay the very ones of before)."""
    optimiser.zero_grad()
    scaled = scaler is not None and scaler.is_enabled()
    (scaler.scale(loss) if scaled else loss).backward()
    for group in optimiser.param_groups:
        group["lr"] = rate
    if scaled:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()


def resumed_scaler(compute: Compute, state: dict | None):
    """The run's gradient scaler (enabled for fp16 only), with the scale and growth tracker the
    checkpoint it resumes from kept: a fresh scaler would start again at 2**16 and skip steps
    backing off to where the interrupted run already was."""
    scaler = grad_scaler(compute)
    saved = (state or {}).get("grad_scaler")
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)
    return scaler


def _restore(state: dict | None, net, optimiser, rng: np.random.Generator, own_rng: np.random.Generator, info,
             last: Path) -> tuple[int, list[float]]:
    """Resume from ``state`` (weights, optimiser, every random stream): the step it ends at and the
    losses so far; (0, []) for a new run."""
    if state is None:
        return 0, []
    net.load_state_dict(state["network"])
    optimiser.load_state_dict(state["optimiser"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    _restore_rank_state(state, info, own_rng, last)
    return int(state["step"]), list(state["losses"])


def _checkpoint(last: Path, step: int, net, optimiser, rng: np.random.Generator, own_rng: np.random.Generator,
                losses: list[float], info, *, scaler=None, precision: str = DEFAULT_PRECISION) -> None:
    """``last.pt``: one writer (rank 0); every rank's random streams go into it, and the precision with
    the gradient scaler's state when it is enabled (fp16; the same on every rank, whose gradients DDP
    has averaged)."""
    ranks = ddp.all_gather_objects(info, _rank_state(own_rng)) if info.enabled else None
    scaled = scaler is not None and scaler.is_enabled()
    if info.is_main:
        write_pretrain_state(last, step=step, network=net.state_dict(), optimiser=optimiser.state_dict(),
                             numpy_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(), losses=losses,
                             ranks=ranks, precision=precision, grad_scaler=scaler.state_dict() if scaled else None)


def _check_out_dir(out_dir: Path, last: Path, resume: bool, info,
                   precision: str = DEFAULT_PRECISION) -> dict | None:
    """Refuse to overwrite a run or resume none; the checkpoint to resume from (read and vetted, its
    precision included, before any preprocessing, so a bad checkpoint costs nothing), else None."""
    occupied = out_dir.exists() and any(out_dir.iterdir())
    ddp.barrier(info)  # every rank has looked before rank 0 writes anything
    if occupied and not resume:
        raise MribenchError(f"{out_dir} already holds a pretraining run; pass --resume to continue it "
                            "or --out for a new folder")
    if resume and not last.is_file():
        raise MribenchError(f"--resume: no checkpoint at {last}")
    state = read_pretrain_state(last) if resume else None
    check_resume_precision(state, precision, last)
    out_dir.mkdir(parents=True, exist_ok=True)
    return state


def check_resume_precision(state: dict | None, precision: str, last: Path) -> None:
    """Refuse to resume in another ``--precision`` than the checkpoint's (fp32 when it records none):
    the rest of the run would train another way than its first steps, and neither run's card would
    say what it was."""
    if state is None:
        return
    saved = state.get("precision", DEFAULT_PRECISION)
    if saved != precision:
        raise MribenchError(f"--resume --precision {precision}: {last} was written with --precision {saved}; "
                            f"resume with --precision {saved}, or start a new run with --out")


WARM_START = "init_from.json"


def _check_before_work(init_from: Path | None, state: dict | None, steps: int, lr: float, lr_schedule: str) -> None:
    """What can be refused before any preprocessing, so a typo costs nothing: an unknown learning-rate
    schedule, and a new run's missing --init-from file."""
    learning_rate(1, steps, lr, lr_schedule)
    if init_from is not None and state is None and not Path(init_from).is_file():
        raise MribenchError(f"--init-from: {init_from} not found")


def _warm_start(init_from: Path | None, method: SSLMethod, net: torch.nn.Module, out_dir: Path,
                start_step: int) -> dict | None:
    """:func:`warm_start_from` for a recipe: names also matched in its encoder network, and the recipe
    told once the weights are in (e.g. a momentum key network starts from them too)."""
    warm = warm_start_from(init_from, net, out_dir, start_step, method.name, encoder_net=getattr(method, "net", None))
    if warm is not None and start_step == 0 and hasattr(method, "warm_started"):
        method.warm_started()
    return warm


def warm_start_from(init_from: Path | None, net: torch.nn.Module, out_dir: Path, start_step: int,
                    name: str, encoder_net: torch.nn.Module | None = None) -> dict | None:
    """Continue another run's weights (``bench pretrain --init-from ENCODER.pt``, or a run's
    ``last.pt``: see :func:`_warm_source`): every tensor of
    the checkpoint whose name and shape the recipe's network shares is copied in before step 1
    (e.g. simclr3d's backbone into temporal's, whose order and sequence heads start fresh). When
    no name matches the training network (a wrapper with a queue: ``net.encoder...``), the names
    are matched in ``encoder_net``, the module whose state an encoder checkpoint holds, so a
    committed ``baselines/weights/*.pt`` continues too. What was loaded (checkpoint hash, tensors,
    the source card's pretraining subjects) is kept in ``out_dir/init_from.json`` for the card,
    so a resumed run still declares it."""
    record = out_dir / WARM_START
    if start_step > 0 or init_from is None:
        return json.loads(record.read_text()) if record.is_file() else None
    from bench.results import read_bounded_json
    from bench.splits import file_sha256

    init_from = Path(init_from)
    source, card_file = _warm_source(init_from)
    n_own = len(net.state_dict())
    for target in [net] + ([encoder_net] if encoder_net is not None and encoder_net is not net else []):
        own = target.state_dict()
        shared = {k: v for k, v in source.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if shared:
            break
    if not shared:
        raise MribenchError(f"--init-from {init_from}: no tensor of it has the name and shape of one in {name}'s "
                            f"network (its keys start {', '.join(list(source)[:3])})")
    target.load_state_dict(shared, strict=False)
    card = read_bounded_json(card_file, "encoder card") if card_file.is_file() else {}
    card = card if isinstance(card, dict) else {}
    data = card.get("pretraining_data") or {}
    if not isinstance(data, dict) or not isinstance(data.get("subjects", []), list):
        raise MribenchError(f"{card_file}: the card's 'pretraining_data' is not an object with a 'subjects' list; "
                            "fix or remove the card")
    warm = {"checkpoint_sha256": file_sha256(init_from), "encoder": card.get("name"),
            "ssl_method": card.get("ssl_method"), "steps": data.get("steps"), "cohort": data.get("cohort"),
            "tensors_loaded": len(shared), "tensors_fresh": n_own - len(shared),
            "subjects": list(data.get("subjects", []))}
    _atomic_text(record, json.dumps(warm, indent=2, sort_keys=True) + "\n")
    return warm


def _warm_source(init_from: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors --init-from continues, and the card that declares them (read with bounds: it
    travels with the weights from anywhere). An encoder checkpoint holds only the encoder, its card
    beside it (``NAME.json``). A run's ``last.pt`` holds the whole training network, so a recipe
    whose heads carry what it learnt (DINO's prototypes, teacher and centre) continues all of it;
    its card is the run's ``encoder.json``. Either file is loaded with ``weights_only=True``."""
    from bench.encoders.api import read_state_dict

    if init_from.name == "last.pt":
        return read_pretrain_state(init_from)["network"], init_from.with_name("encoder.json")
    return read_state_dict(init_from), init_from.with_suffix(".json")  # a bad file is its one-line error


def _pool_rows(method: SSLMethod, cohort: Cohort):
    """The pretraining pool's subjects, and their scans of the sequences the method trains on."""
    pool = pretraining_pool(cohort)
    t = cohort.table
    rows = t[t["participant_id"].isin(pool) & t["sequence"].isin(method.sequences)]
    if len(rows) < 2:
        raise MribenchError(f"{cohort.name}: the pretraining pool has {len(rows)} {'/'.join(method.sequences)} "
                            "scan(s); need at least 2")
    return pool, rows


def _start_log(log: Path, start_step: int, info) -> Path:
    """``loss.tsv``: a new one, or (resuming) the old one without the lines after the checkpoint."""
    if info.is_main and start_step == 0:
        _atomic_text(log, "step\tloss\n")
    elif info.is_main:  # drop log lines written after the checkpoint we resume from
        kept = log.read_text().splitlines()[: start_step + 1] if log.is_file() else ["step\tloss"]
        _atomic_text(log, "\n".join(kept) + "\n")
    return log


def _draw(method: SSLMethod, rows, paths: list[str], store: VolumeStore, rng: np.random.Generator,
          own_rng: np.random.Generator, batch: int, info) -> torch.Tensor:
    """This rank's share of the step's batch: the method's own draw (optional ``draw_batch``, for
    methods that need structure, e.g. a subject's sequence; under DDP each rank draws its share with
    its own stream), else random scans of the shared stream, this rank's shard of the global batch."""
    if hasattr(method, "draw_batch"):
        return method.draw_batch(rows, lambda p: np.asarray(store.get(p, method.input_space), np.float32),
                                 own_rng, batch // info.world_size)
    pick = np.sort(rng.choice(len(paths), size=batch, replace=False))
    pick = pick[info.rank::info.world_size]
    return torch.from_numpy(np.stack([np.asarray(store.get(paths[i], method.input_space), np.float32)
                                      for i in pick]))[:, None]


def _write_encoder(method: SSLMethod, out_dir: Path, pool: list[str], cohort_name: str, steps: int, cost: dict,
                   command: str, info, warm_start: dict | None = None) -> tuple[Path, Path]:
    """Rank 0 writes the encoder's weights and, beside them, its card (the encoder reads it from there);
    ``cost`` is what the run took (batch, learning rate and schedule, wall time, throughput);
    ``warm_start`` the checkpoint it started from (see :func:`warm_start_from`)."""
    encoder_path = out_dir / "encoder.pt"
    card_path = encoder_path.with_suffix(".json")
    if not info.is_main:
        return encoder_path, card_path
    _atomic_torch_save(method.encoder_state(), encoder_path)
    from bench.splits import file_sha256

    card = method.card(pool, cohort_name, steps)
    card["checkpoint_sha256"] = file_sha256(encoder_path)
    card.setdefault("pretraining_data", {})["command"] = command
    card["pretraining_data"].update(cost)  # what the run cost, for whoever wants to reproduce it
    if info.enabled:
        card["pretraining_data"]["processes"] = info.world_size
    if warm_start:  # the subjects the starting weights saw count as pretraining subjects too
        data = card["pretraining_data"]
        data["init_from"] = warm_start
        data["subjects"] = sorted(set(data.get("subjects", [])) | set(warm_start["subjects"]))
    _atomic_text(card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return encoder_path, card_path


# -- data parallel (bench pretrain --nproc N) ---------------------------------------------------
class _StepLoss(torch.nn.Module):
    """The recipe's loss as a module, so DistributedDataParallel wraps one forward per step (the
    recipes call their network several times per loss, e.g. once per view)."""

    def __init__(self, method: SSLMethod, net: torch.nn.Module):
        super().__init__()
        self.method, self.net = method, net  # self.net registers the parameters DDP synchronises

    def forward(self, x, rng: np.random.Generator) -> torch.Tensor:
        return self.method.loss(x, rng)


def _data_parallel(method: SSLMethod, net: torch.nn.Module, info: ddp.DistInfo):
    """``loss(x, rng)`` for one training step: the recipe's own with one process, else through DDP,
    which averages the gradients of the ranks' shards during backward."""
    if not info.enabled:
        return method.loss
    from torch.nn.parallel import DistributedDataParallel

    # every parameter that requires a gradient must take part in each step's loss (true of the recipes
    # here); DDP names any that does not
    return DistributedDataParallel(_StepLoss(method, net),
                                   device_ids=[info.device.index] if info.device.type == "cuda" else None)


def _to_device(x, device: torch.device):
    """Move a batch (a tensor, or a dataclass holding tensors) to the rank's device."""
    import dataclasses

    if device.type == "cpu":
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if dataclasses.is_dataclass(x):
        return dataclasses.replace(x, **{f.name: getattr(x, f.name).to(device) for f in dataclasses.fields(x)
                                         if isinstance(getattr(x, f.name), torch.Tensor)})
    return x


def _rank_state(own_rng: np.random.Generator) -> dict:
    """This rank's random streams, for the checkpoint rank 0 writes."""
    state = {"numpy_rng": own_rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def _restore_rank_state(state: dict, info: ddp.DistInfo, own_rng: np.random.Generator, last: Path) -> None:
    """Give this rank back its streams from the checkpoint; refuse another number of processes,
    since the shards (and so the run) would differ from the one that was interrupted."""
    saved = int(state.get("world_size", 1))
    if saved != info.world_size:
        raise MribenchError(f"{last} was written by {saved} process(es); resume with --nproc {saved} "
                            f"(this run has {info.world_size})")
    if info.enabled:
        mine = state["ranks"][info.rank]
        own_rng.bit_generator.state = mine["numpy_rng"]
        torch.set_rng_state(mine["torch_rng"])
        if "cuda_rng" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
