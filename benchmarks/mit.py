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

Prints the median ms per step of each, the ratio first / current, the
fastest step of each (less sensitive to other processes on a shared
machine), the page faults and system time per step of the current version
(what the allocator setting changes), and a micro-benchmark of the one conv
that takes the GEMM weight-gradient path against the library's backward.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from medssl.backbones.mit import mit_small
from medssl.backbones.mit_layers import _ThinSlabConv3d, set_attention_impl, set_fast_paths
from medssl.runtime import tune_cpu_allocator

SHAPES = [(2, 1, 16, 96, 96), (4, 3, 224, 224)]


def step(model: torch.nn.Module, x: torch.Tensor, usage: dict) -> float:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    model.forward_cls(x).square().sum().backward()
    ms = (time.perf_counter() - t0) * 1e3
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    usage["faults"].append(r1.ru_minflt - r0.ru_minflt)
    usage["sys_ms"].append((r1.ru_stime - r0.ru_stime) * 1e3)
    return ms


def thin_slab_weight_grad(repeats: int) -> None:
    """MiT-small's 3D stage-4 patch embedding (a 2-slice map, 3-deep kernel): conv3d forward +
    backward with the library's weight gradient vs the im2col GEMM one."""
    torch.manual_seed(0)
    x = torch.randn(2, 256, 2, 6, 6, requires_grad=True)
    w = torch.randn(512, 256, 3, 3, 3, requires_grad=True)
    fns = {"library": lambda: F.conv3d(x, w, None, 2, 1),
           "gemm": lambda: _ThinSlabConv3d.apply(x, w, (2, 2, 2), (1, 1, 1))}
    times = {k: [] for k in fns}
    for _ in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn().square().sum().backward()
            times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    print(f"stage-4 3D patch embedding [512, 256, 3, 3, 3] on (2, 256, 2, 6, 6), forward + backward: "
          f"library {med['library']:.1f} ms, GEMM weight gradient {med['gemm']:.1f} ms, "
          f"ratio x{med['library'] / med['gemm']:.2f}", flush=True)


def profile_3d(model: torch.nn.Module, rows: int = 12) -> None:
    """torch.profiler over 3 steps of the 3D input, plain convs vs fast paths: the costliest
    convolution and copy ops by input shape, in ms per step."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(SHAPES[0])
    set_attention_impl(model, "sdpa")
    for fast in (False, True):
        set_fast_paths(model, fast)
        step(model, x, {"faults": [], "sys_ms": []})
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                step(model, x, {"faults": [], "sys_ms": []})
        keep = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::copy_")
        events = sorted((e for e in prof.key_averages(group_by_input_shape=True) if e.key in keep),
                        key=lambda e: -e.cpu_time_total)[:rows]
        print(f"profile, 3D step, fast paths {'on' if fast else 'off'} (ms per step, calls per step, first input shapes):")
        for e in events:
            print(f"  {e.key:28s} {e.cpu_time_total / 3e3:6.1f} ms  x{e.count / 3:4.1f}  {e.input_shapes[:3]}")
        matmul = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm"))
        print(f"  matrix products (aten::mm + aten::addmm, self time): {matmul / 3e3:.0f} ms per step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--plain-allocator", action="store_true", help="leave glibc malloc at its defaults")
    ap.add_argument("--profile", action="store_true", help="also profile the 3D step with and without the fast paths")
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
        usage = {name: {"faults": [], "sys_ms": []} for name in variants}
        for _ in range(args.repeats + 1):  # the first round is a warm-up
            for name, (impl, fast) in variants.items():
                set_attention_impl(model, impl)
                set_fast_paths(model, fast)
                times[name].append(step(model, x, usage[name]))
        med = {k: statistics.median(v[1:]) for k, v in times.items()}
        fastest = {k: min(v[1:]) for k, v in times.items()}
        cur = usage["current"]
        print(
            f"input {shape}: " + ", ".join(f"{k} {med[k]:.0f} ms" for k in variants)
            + f"; ratio first/current x{med['first'] / med['current']:.2f}"
            + "  (fastest step: " + " / ".join(f"{fastest[k]:.0f}" for k in variants) + " ms)"
            + f"; current: {statistics.median(cur['faults'][1:]):.0f} page faults and "
            f"{statistics.median(cur['sys_ms'][1:]):.0f} ms system time per step",
            flush=True,
        )
    thin_slab_weight_grad(args.repeats)
    if args.profile:
        profile_3d(model)


if __name__ == "__main__":
    main()
