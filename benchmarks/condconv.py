"""DrasCLR encoder speed: forward+backward at batch 32 of 32^3 patches.

Prints milliseconds per step (median over interleaved repeats) for
  plain   - the same network with unconditioned convolutions (the floor)
  shared  - conditioned, every sample at one location (the released schedule)
  few     - conditioned, 4 locations in the batch (a grouped pass order straddling chunks)
  mixed   - conditioned, a different location per sample
  loop    - conditioned, the released per-sample loop
and the ratios to `plain` measured in the same run, of wall-clock and of
process CPU time (the steadier of the two when other jobs share the cores).

    OMP_NUM_THREADS=1 python benchmarks/condconv.py [--batch 32] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medssl.backbones.cond_cnn3d import CondCNN3d


def step(model: CondCNN3d, x: torch.Tensor, loc: torch.Tensor, loop: bool) -> None:
    feats = model.forward_intermediates(x, loc, loop=loop)
    h = feats[-1].flatten(1)
    model.project(h).pow(2).mean().backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS / torch's default)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B = args.batch
    x = torch.randn(B, 1, 32, 32, 32)
    shared_loc = (torch.rand(1, 3) * 2 - 1).expand(B, 3).contiguous()
    mixed_loc = torch.rand(B, 3) * 2 - 1
    few_loc = (torch.rand(4, 3) * 2 - 1)[torch.arange(B) % 4]
    cond = CondCNN3d().train()
    plain = CondCNN3d(conditioned=False).train()
    cases = {
        "plain": lambda: step(plain, x, None, False),
        "shared": lambda: step(cond, x, shared_loc, False),
        "few": lambda: step(cond, x, few_loc, False),
        "mixed": lambda: step(cond, x, mixed_loc, False),
        "loop": lambda: step(cond, x, mixed_loc, True),
    }
    for fn in cases.values():  # warm-up
        fn()
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for _ in range(args.repeats):
        for k, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(1000 * (time.perf_counter() - t0))
            cpu[k].append(1000 * (time.process_time() - c0))
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"batch {B} x 1x32^3, forward+backward, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved repeats")
    for k in cases:
        print(f"{k:>7}: {med[k]:8.1f} ms   ratio to plain {med[k] / med['plain']:.2f}x   "
              f"(CPU time {cmed[k]:8.1f} ms, ratio {cmed[k] / cmed['plain']:.2f}x)")
    print(f"loop / mixed speed-up: {med['loop'] / med['mixed']:.2f}x")


if __name__ == "__main__":
    main()
