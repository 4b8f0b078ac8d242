"""Default vs channels-last memory layout for each encoder's forward pass on the CPU.

    python benchmarks/forward_layout.py [ENCODER ...] [--rounds N] [--batch-size B]

Both layouts are timed in alternating rounds in one process (so other load on the machine hits
both alike) on the same seeded batch; prints the median time per volume, wall-clock and CPU, and
the largest difference between the two layouts' embeddings. This is how
:func:`bench.embeddings.prefers_channels_last` was decided: faster for the 3D ResNets, slower
for the ViTs, embeddings equal to float rounding.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def time_layout(encoder, x: torch.Tensor, channels_last: bool) -> tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds, embeddings) of one pass over ``x`` in the given layout."""
    module = encoder.module()
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    module.to(memory_format=layout)
    batch = x.contiguous(memory_format=layout)
    try:
        with torch.inference_mode():
            encoder.embed(batch)  # warm-up: kernel selection for this layout
            wall, cpu = time.perf_counter(), time.process_time()
            out = encoder.embed(batch)
            return time.perf_counter() - wall, time.process_time() - cpu, out.float().numpy()
    finally:
        module.to(memory_format=torch.contiguous_format)


def main() -> None:
    from bench.data.spaces import get_space
    from bench.embeddings import prefers_channels_last
    from bench.encoders import get_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="*", default=["simclr3d", "random", "mae3d", "simclr_vit3d"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} rounds, "
          f"batch {args.batch_size}")
    for name in args.encoders:
        encoder = get_encoder(name)
        if hasattr(encoder, "_untrained_ok"):
            encoder._untrained_ok = True  # speed does not depend on the weights
        shape = get_space(encoder.card.input_space).shape
        x = torch.randn((args.batch_size, 1, *shape), generator=torch.Generator().manual_seed(0))
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        outs = {}
        for _ in range(args.rounds):
            for cl in (False, True):
                wall, cpu, outs[cl] = time_layout(encoder, x, cl)
                runs[cl].append((wall, cpu))
        diff = float(np.abs(outs[True] - outs[False]).max())
        per = {cl: np.median(np.asarray(v), axis=0) / args.batch_size * 1000 for cl, v in runs.items()}
        print(f"{name:14s} default {per[False][0]:6.1f} ms wall {per[False][1]:6.1f} ms CPU | channels-last "
              f"{per[True][0]:6.1f} ms wall {per[True][1]:6.1f} ms CPU | max |diff| {diff:.1e} | harness uses "
              f"{'channels-last' if prefers_channels_last(encoder.module()) else 'default'}")


if __name__ == "__main__":
    main()
