"""MiT-small forward + backward per step on CPU, against the unoptimised first version.

Usage::

    python benchmarks/mit.py [--threads 2] [--repeats 7]

The baseline is the same network with the attention written out as
``softmax(q k^T * scale) v`` (the released formulation, materialising the
attention matrix); the current version uses ``F.scaled_dot_product_attention``.
Both run the UniMiSS SSL forward (encoder + decoder, decoder cls token) and a
backward pass, interleaved step by step so that load from other processes hits
both alike. Prints the median ms per step, the ratio baseline / current, and the fastest
step of each (less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medssl.backbones.mit import mit_small
from medssl.backbones.mit_layers import set_attention_impl

SHAPES = [(2, 1, 16, 96, 96), (4, 3, 224, 224)]


def step(model: torch.nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    model.forward_cls(x).square().sum().backward()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mit_small().train()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} timed steps per variant (medians)")
    for shape in SHAPES:
        x = torch.rand(shape)
        times = {"naive": [], "sdpa": []}
        for impl in times:  # warm-up
            set_attention_impl(model, impl)
            step(model, x)
        for _ in range(args.repeats):
            for impl in times:
                set_attention_impl(model, impl)
                times[impl].append(step(model, x))
        base, cur = statistics.median(times["naive"]), statistics.median(times["sdpa"])
        print(f"input {shape}: baseline (naive attention) {base:.0f} ms, current (SDPA) {cur:.0f} ms, "
              f"ratio baseline/current x{base / cur:.2f}  (fastest step: {min(times['naive']):.0f} / "
              f"{min(times['sdpa']):.0f} ms)", flush=True)


if __name__ == "__main__":
    main()
