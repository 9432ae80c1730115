"""Deformable slice attention vs full attention over slices: forward+backward throughput and activation memory.

    OMP_NUM_THREADS=1 python benchmarks/deformable_attention.py [--device cpu|cuda] [--batch 4] [--repeats 20]

Both modules have the full-size IICC widths (D 640, 8 heads x 64, offsets
k6 s4, 8 groups, continuous position bias); one layer each, measured in the
same run at 64 and 256 slices, the two layers' steps interleaved, medians of
the repeats. Prints the ratios deformable / full (throughput ratio > 1:
deformable is faster; memory ratio < 1: it uses less), of wall-clock and of
process CPU time (the steadier of the two when other jobs share the cores).

Memory: on GPU, ``max_memory_allocated`` of one step. On CPU, the activation
memory is the bytes of the distinct storages autograd keeps for backward,
parameters excluded (a tensor saved by two operations, or several views of
one tensor, counts once). The last column is the count of earlier versions of
this script: every saved tensor's ``numel * element_size``, parameters
included, a storage counted each time it is saved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medssl.backbones.deformable_slice_attention import DeformableSliceAttention, FullSliceAttention


def saved_memory(fn, params) -> tuple:
    """(activation bytes: distinct non-parameter storages saved for backward, the per-save count) of ``fn()``."""
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    storages: dict = {}
    per_save = 0

    def pack(t):
        nonlocal per_save
        per_save += t.numel() * t.element_size()
        st = t.untyped_storage()
        if st.data_ptr() not in param_storages:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()), per_save


def step(module, x) -> None:
    module(x).square().mean().backward()
    module.zero_grad(set_to_none=True)
    x.grad = None


def timed(fn, device: str) -> tuple:
    if device == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def gpu_peak(module, x) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step(module, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--slices", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = args.device
    mods = {
        "deformable": DeformableSliceAttention(dim=640, heads=8, head_dim=64, offset_groups=8, offset_kernel=6, offset_stride=4).to(dev),
        "full": FullSliceAttention(dim=640, heads=8, head_dim=64).to(dev),
    }
    print(f"device {dev}, batch {args.batch}, width 640, 8 heads x 64, one layer, forward+backward, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats")
    mem_head = "peak memory (GPU)" if dev == "cuda" else "activation memory"
    print(f"| slices | sampled keys | deformable vol/s | full vol/s | throughput ratio, wall | throughput ratio, CPU time "
          f"| {mem_head} deformable | full | memory ratio | per-save count deformable / full |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.slices:
        x = torch.randn(args.batch, n, 640, device=dev, requires_grad=True)
        for m in mods.values():  # warm-up (and compilation of the CPU loops)
            for _ in range(2):
                step(m, x)
        wall = {k: [] for k in mods}
        cpu = {k: [] for k in mods}
        for _ in range(args.repeats):
            for k, m in mods.items():
                w, c = timed(lambda: step(m, x), dev)
                wall[k].append(w)
                cpu[k].append(c)
        wm = {k: statistics.median(v) for k, v in wall.items()}
        cm = {k: statistics.median(v) for k, v in cpu.items()}
        if dev == "cuda":
            mem = {k: (gpu_peak(m, x), 0) for k, m in mods.items()}
        else:
            mem = {k: saved_memory(lambda: m(x), list(m.parameters())) for k, m in mods.items()}
        md, mf = mem["deformable"], mem["full"]
        naive = f"{md[1] / 2**20:.1f} / {mf[1] / 2**20:.1f} MiB" if dev != "cuda" else "-"
        print(f"| {n} | {mods['deformable'].n_samples(n)} | {args.batch / wm['deformable']:.1f} | {args.batch / wm['full']:.1f} "
              f"| {wm['full'] / wm['deformable']:.2f} | {cm['full'] / cm['deformable']:.2f} "
              f"| {md[0] / 2**20:.2f} MiB | {mf[0] / 2**20:.2f} MiB | {md[0] / mf[0]:.2f} | {naive} |", flush=True)


if __name__ == "__main__":
    main()
