"""Training throughput and peak memory per baseline at the tiny preset, with and without
gradient checkpointing.

    OMP_NUM_THREADS=1 python benchmarks/train.py [--steps 6] [--methods simclr moco dino mae]

Each (method, checkpointing) pair runs in its own process, so the peak
resident memory (``ru_maxrss``) belongs to that configuration alone; we
report the peak minus the resident size just before the first step (the
training-time memory: activations, gradients, optimiser state). Batches are
made by the method's own view generator from random patches of the preset's
patch size (no disk reads), then the trainer's step is run: forward,
backward, optimiser step, ``on_after_step``. The first step is a warm-up and
is not timed. Ratios are against the same method without checkpointing,
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(method: str, ckpt: bool, steps: int) -> dict:
    import numpy as np
    import torch

    from medssl.config import load_config
    from medssl.train.build import build_method
    from medssl.train.data import collate_views
    from medssl.train.optim import apply_schedule, build_optimizer
    from medssl.train.schedules import schedule_values

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs" / f"{method}_tiny.yaml")
    torch.manual_seed(0)
    model = build_method(cfg)
    model.encoder.set_grad_checkpointing(ckpt)
    opt = build_optimizer(model.param_groups(cfg.optim.weight_decay), cfg.optim)
    views = model.view_generator()
    size = cfg.data.kwargs.get("patch_size", [32, 32, 32])
    rng = np.random.default_rng(0)
    B = cfg.data.batch_size

    def batch(step: int):
        items = [views({"image": torch.from_numpy(rng.random((1, *size), dtype=np.float32)), "id": f"c{i}", "meta": {}}, np.random.default_rng([step, i])) for i in range(B)]
        return collate_views(items)

    batches = [batch(s) for s in range(steps + 1)]
    model.train()

    def step(s: int) -> None:
        sched = schedule_values(s, total_steps=steps + 1, optim=cfg.optim, schedules=cfg.schedules)
        apply_schedule(opt, sched)
        model.on_before_step(s, sched)
        out = model.training_step(batches[s])
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.on_after_step(s, sched)

    before = rss_mb()
    step(0)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        step(s)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "grad_checkpointing": ckpt, "samples_per_s": B * steps / dt, "train_peak_mb": peak - before, "batch": B}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--methods", nargs="*", default=["simclr", "moco", "dino", "mae"])
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1] == "1", a.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    results = []
    for m in a.methods:
        for ck in ("0", "1"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--one", m, ck], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{m} ckpt={ck}: failed\n{out.stderr[-1500:]}")
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| method | batch | samples/s | samples/s with ckpt (ratio) | train peak MB | with ckpt MB (ratio) |")
    print("|---|---|---|---|---|---|")
    for m in a.methods:
        r = {x["grad_checkpointing"]: x for x in results if x["method"] == m}
        if len(r) < 2:
            continue
        o, c = r[False], r[True]
        print(f"| {m} | {o['batch']} | {o['samples_per_s']:.1f} | {c['samples_per_s']:.1f} ({c['samples_per_s'] / o['samples_per_s']:.2f}x) | "
              f"{o['train_peak_mb']:.0f} | {c['train_peak_mb']:.0f} ({c['train_peak_mb'] / max(o['train_peak_mb'], 1e-9):.2f}x) |")


if __name__ == "__main__":
    main()
