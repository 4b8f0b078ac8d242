"""Where a bf16 conv3d on this CPU is wrong: the evidence behind ``bench.devices.check_can_train``.

torch 2.13's oneDNN kernels, on AVX-512 CPUs, return a wrong weight gradient for a bf16 3x3x3
convolution over a feature map with a side of 2 voxels, while its output and input gradient are
right; the last ResNet stage of a ``cpu-small`` encoder (64 -> 32 -> 16 -> 8 -> 4 -> 2) is such a
map. This script measures, for a range of map shapes and channel counts, each of the three errors
(relative to the largest fp32 value, :func:`bench.devices.bf16_conv3d_errors`) with oneDNN's kernels
and with torch's own, and says which CPU it ran on, since the answer depends on it (capping oneDNN
with ``ONEDNN_MAX_CPU_ISA=AVX2`` gives right gradients on the same machine). The wrong values change
from run to run (0.9 to 1e36, at times NaN: they read like memory left uninitialised); which cells
are wrong does not. Non-finite errors are written as the strings "nan" and "inf".

Usage::

    python benchmarks/bf16_conv3d_gradients.py --json benchmarks/results/bf16_conv3d_gradients.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import warnings
from pathlib import Path

#: Feature-map shapes measured: cubes of side 1 to 6, and one side of 2 (or 3) among sides of 8.
MAP_SHAPES = ((1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5), (6, 6, 6), (2, 8, 8), (8, 8, 3))
CHANNELS = (8, 16, 64)
#: A weight gradient further from fp32 than this is wrong (bf16 rounding alone stays under 0.01).
WRONG_ABOVE = 0.05
#: The CPU flags that choose oneDNN's kernels.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu() -> dict:
    """The CPU's model and the flags of :data:`FLAGS` it has (Linux's /proc/cpuinfo; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": model or platform.processor(), "flags": [f for f in FLAGS if f in flags],
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def measure(batch: int = 2) -> list[dict]:
    """Every (kernels, map shape, channels) of the grid with its three relative errors."""
    import torch

    from bench.devices import bf16_conv3d_errors

    rows = []
    for onednn in (True, False):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=onednn):
                for shape in MAP_SHAPES:
                    for channels in CHANNELS:
                        errors = bf16_conv3d_errors(shape, channels, batch)
                        rows.append({"kernels": "oneDNN" if onednn else "torch", "map": "x".join(map(str, shape)),
                                     "channels": channels, **{k: _json_number(v) for k, v in errors.items()},
                                     "weight_gradient_wrong": not errors["weight_gradient"] < WRONG_ABOVE})
    return rows


def _json_number(value: float) -> float | str:
    """``value``, or its name when it is not finite (strict JSON has no NaN or infinity)."""
    return value if math.isfinite(value) else str(value)


def _shown(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, default=None, help="write the measurements here")
    args = p.parse_args(argv)
    import torch

    rows = measure()
    report = {"torch": torch.__version__, "cpu": cpu(), "wrong_above": WRONG_ABOVE, "rows": rows}
    print(f"torch {report['torch']} on {report['cpu']['model']} ({', '.join(report['cpu']['flags'])})")
    for row in rows:
        print(f"{row['kernels']:>6} {row['map']:>6} x{row['channels']:<3} output {_shown(row['output'])}  "
              f"input grad {_shown(row['input_gradient'])}  weight grad {_shown(row['weight_gradient'])}"
              f"{'  WRONG' if row['weight_gradient_wrong'] else ''}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
