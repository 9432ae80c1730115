"""Deformable slice attention vs full attention over slices: forward+backward throughput and peak memory.

    python benchmarks/deformable_attention.py [--device cpu|cuda] [--batch 4] [--repeats 10]

Both modules have the full-size IICC widths (D 640, 8 heads x 64, offsets
k6 s4, 8 groups); one layer each, measured in the same run at 64 and 256
slices. Prints each timing, then the ratios deformable / full (throughput
ratio > 1: deformable is faster; memory ratio < 1: it uses less). Peak
memory is CUDA's max_memory_allocated on GPU, and the bytes of tensors
autograd saves for backward on CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from medssl.backbones.deformable_slice_attention import DeformableSliceAttention, FullSliceAttention


def saved_bytes(fn) -> int:
    """Bytes of tensors kept for backward while ``fn()`` runs (the activation memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total, out


def measure(module, x, repeats: int, device: str):
    def step():
        y = module(x)
        y.square().mean().backward()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        mem = torch.cuda.max_memory_allocated()
    else:
        mem, _ = saved_bytes(lambda: module(x))
    dt = (time.perf_counter() - t0) / repeats
    return x.shape[0] / dt, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--slices", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = args.device
    deform = DeformableSliceAttention(dim=640, heads=8, head_dim=64, offset_groups=8, offset_kernel=6, offset_stride=4).to(dev)
    full = FullSliceAttention(dim=640, heads=8, head_dim=64).to(dev)
    print(f"device {dev}, batch {args.batch}, width 640, 8 heads x 64, one layer, forward+backward")
    print("| slices | sampled keys | deformable vol/s | full vol/s | throughput ratio (deform/full) | memory deform | memory full | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.slices:
        x = torch.randn(args.batch, n, 640, device=dev, requires_grad=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
        td, md = measure(deform, x, args.repeats, dev)
        if dev == "cuda":
            torch.cuda.empty_cache()
        tf, mf = measure(full, x, args.repeats, dev)
        print(f"| {n} | {deform.n_samples(n)} | {td:.1f} | {tf:.1f} | {td / tf:.2f} | {md / 2**20:.1f} MiB | {mf / 2**20:.1f} MiB | {md / mf:.2f} |")


if __name__ == "__main__":
    main()
