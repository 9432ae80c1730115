"""MiT-small forward + backward per step on CPU, against the unoptimised first version.

Usage::

    python benchmarks/mit.py [--threads 2] [--repeats 7]

Three variants of the same network (same weights, same function) run the
UniMiSS SSL forward (encoder + decoder, decoder cls token) and a backward
pass, interleaved step by step so that load from other processes hits all
alike:

- ``first``: the first version: attention written out as
  ``softmax(q k^T * scale) v`` (the released formulation) and every conv a
  plain PyTorch module call (``set_fast_paths(model, False)``);
- ``sdpa``: ``F.scaled_dot_product_attention``, plain convs;
- ``current``: SDPA and the CPU fast paths of ``medssl.backbones.mit_layers``
  (spatial-reduction and transposed convs as matrix products on tokens,
  contiguous patch-embedding inputs, GEMM weight gradient for thin slabs).

The process runs with the allocator setting every ``medssl`` command and
``fit`` apply (:func:`medssl.runtime.tune_cpu_allocator`);
``--plain-allocator`` leaves glibc's defaults, as a plain Python process has.

Prints the median ms per step of each, the ratio first / current, and the
fastest step of each (less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medssl.backbones.mit import mit_small
from medssl.backbones.mit_layers import set_attention_impl, set_fast_paths
from medssl.runtime import tune_cpu_allocator

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
    ap.add_argument("--plain-allocator", action="store_true", help="leave glibc malloc at its defaults")
    args = ap.parse_args()
    tuned = False if args.plain_allocator else tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mit_small().train()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} timed steps per variant (medians), "
          f"allocator {'tuned' if tuned else 'plain'}")
    variants = {"first": ("naive", False), "sdpa": ("sdpa", False), "current": ("sdpa", True)}
    for shape in SHAPES:
        x = torch.rand(shape)
        times = {name: [] for name in variants}
        for _ in range(args.repeats + 1):  # the first round is a warm-up
            for name, (impl, fast) in variants.items():
                set_attention_impl(model, impl)
                set_fast_paths(model, fast)
                times[name].append(step(model, x))
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        fastest = {k: min(v[1:]) for k, v in times.items()}
        print(
            f"input {shape}: " + ", ".join(f"{k} {med[k]:.0f} ms" for k in variants)
            + f"; ratio first/current x{med['first'] / med['current']:.2f}"
            + "  (fastest step: " + " / ".join(f"{fastest[k]:.0f}" for k in variants) + " ms)",
            flush=True,
        )

if __name__ == "__main__":
    main()
