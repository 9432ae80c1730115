"""Peak CPU memory of one T3D training step per crop size, with and without gradient checkpointing.

Each configuration runs in a fresh subprocess (so peaks do not mix); the peak
is the growth of the process's maximum resident set size (``ru_maxrss``)
over one forward + backward, and the activations kept for backward are the
bytes of the tensors autograd saves (``saved_tensors_hooks``), the part
checkpointing removes; both of the ``t3d`` method at batch 2 (2 volumes x 1
crop), a 3D ResNet-10 (width 16) encoder and text-conditioned restoration.
Prints a table and the ratio checkpointed / plain per crop size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/t3d_memory.py [--sizes 64,96,128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def one(size: int, ckpt: bool) -> dict:
    import resource
    import time

    import numpy as np
    import torch

    from medssl.registry import BACKBONES, METHODS
    from medssl.train.data import collate_views

    torch.manual_seed(0)
    bb = BACKBONES.build("resnet", spatial_dims=3, depth=10, width=16)
    m = METHODS.build("t3d", backbone=bb, text_dim=384, joint_dim=64, proj_hidden_dim=128, decoder_dim=64, decoder_heads=4,
                      decoder_depth=1, decoder_channels=[64, 32, 16, 8, 8], cell=16, feature_stride=32)
    m.encoder.set_grad_checkpointing(ckpt)
    rng = np.random.default_rng(0)
    items = [m.view_generator()({"image": torch.rand(1, 1, size, size, size).half(), "report_emb": torch.randn(384),
                                 "sentence_emb": torch.randn(8, 384), "sentence_mask": torch.ones(8, dtype=torch.bool)}, rng)
             for _ in range(2)]
    batch = collate_views(items)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:  # tensors autograd keeps for backward (checkpointed regions keep none)
        saved[0] += t.numel() * t.element_size()
        return t

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = m.training_step(batch)["loss"]
    loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"size": size, "checkpointing": ckpt, "peak_mib": (after - before) / 1024.0, "saved_mib": saved[0] / 2**20,
            "step_s": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,96,128")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        size, ck = a.child.split(":")
        print(json.dumps(one(int(size), ck == "1")))
        return
    rows = []
    for size in (int(s) for s in a.sizes.split(",")):
        for ck in (False, True):
            out = subprocess.run([sys.executable, __file__, "--child", f"{size}:{int(ck)}"], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
            if out.returncode:
                raise SystemExit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| crop | checkpointing | activations kept for backward (MiB) | peak RSS growth (MiB) | step (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}^3 | {'on' if r['checkpointing'] else 'off'} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.1f} |")
    for size in sorted({r["size"] for r in rows}):
        off = next(r for r in rows if r["size"] == size and not r["checkpointing"])
        on = next(r for r in rows if r["size"] == size and r["checkpointing"])
        print(f"{size}^3: checkpointed / plain: activations {on['saved_mib'] / off['saved_mib']:.2f}, "
              f"peak RSS {on['peak_mib'] / off['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
