"""DRR speed: medssl's numba Siddon against a reference renderer measured in the same run.

    .venv/bin/python benchmarks/drr.py [--repeats 3] [--diffdrr-python /path/to/python]

Prints, each as the median over ``--repeats`` rounds:
- 128^3 volume -> 128^2 detector: ms/image for medssl (exact Siddon) and for
  the reference (DiffDRR's Siddon renderer when ``--diffdrr-python`` points at
  a Python that has diffdrr; else a plain torch grid_sample renderer written
  here, 256 trilinear samples per ray over the volume's bounding sphere) and
  the ratio;
- the effect of the memory layout (most-crossed axis contiguous vs as stored);
- images/s for 256^3 -> 256^2;
- voxel steps/s against a numba streaming-sum peak (elements/s) on the same machine;
- DRRs/s of the on-the-fly training source in one DataLoader worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medssl.drr import Projector, hu_to_mu, pose_rays, standard_poses  # noqa: E402
from medssl.drr.source import DRRRenderer, loader_for  # noqa: E402


def phantom(n: int) -> tuple:
    """A chest-like CT in HU, (n, n, n), 320 mm field of view, RAS affine."""
    g = (np.arange(n) - (n - 1) / 2) / (n / 2)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    hu = np.full((n, n, n), -1000.0, np.float32)
    body = (x / 0.9) ** 2 + (y / 0.65) ** 2 < 1
    hu[body] = 40.0
    for side in (-1, 1):
        hu[((x - side * 0.4) / 0.3) ** 2 + (y / 0.4) ** 2 + (z / 0.9) ** 2 < 1] = -850.0
    hu[(x / 0.08) ** 2 + ((y + 0.45) / 0.08) ** 2 < 1] = 1100.0
    aff = np.diag([320.0 / n] * 3 + [1.0])
    aff[:3, 3] = -160.0
    return hu, aff


def timeit(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def grid_sample_renderer(mu: np.ndarray, aff: np.ndarray, src: np.ndarray, tgt: np.ndarray, n_samples: int = 256):
    """A plain torch renderer: trilinear samples over the bounding sphere's chord, one grid_sample call."""
    vol = torch.from_numpy(mu)[None, None]
    inv = torch.from_numpy(np.linalg.inv(aff)).float()
    s, t = torch.from_numpy(src).float(), torch.from_numpy(tgt).float()
    n = torch.tensor(mu.shape, dtype=torch.float32)
    centre = torch.from_numpy(aff[:3, :3] @ ((np.array(mu.shape) - 1) / 2) + aff[:3, 3]).float()
    radius = float(np.linalg.norm(aff[:3, :3] @ (np.array(mu.shape) / 2)))

    def run():
        d = t - s
        length = d.norm(dim=1, keepdim=True)
        u = d / length
        mid = ((centre - s) * u).sum(dim=1, keepdim=True)
        a = (mid - radius + (torch.arange(n_samples) + 0.5) / n_samples * 2 * radius)  # (R, S) mm from source
        pts = s[:, None, :] + a[..., None] * u[:, None, :]
        idx = pts @ inv[:3, :3].T + inv[:3, 3]
        grid = (2 * idx / (n - 1) - 1).flip(-1)[None, :, :, None, :]
        vals = F.grid_sample(vol, grid, align_corners=True, padding_mode="zeros")[0, 0, :, :, 0]
        return vals.sum(dim=1) * (2 * radius / n_samples)

    return run


DIFFDRR_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from diffdrr.drr import DRR
from diffdrr.data import read
import torchio
d = np.load(sys.argv[1])
img = torchio.ScalarImage(tensor=torch.from_numpy(d["hu"])[None], affine=d["affine"])
subject = read(img)
drr = DRR(subject, sdd=1800.0, height=128, delx=float(d["spacing"]), renderer="siddon")
rot = torch.tensor([[0.0, 0.0, 0.0]]); xyz = torch.tensor([[0.0, 1600.0, 0.0]])
with torch.no_grad():
    drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
    t = time.perf_counter(); reps = 5
    for _ in range(reps):
        drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
print(json.dumps({"ms": (time.perf_counter() - t) / reps * 1000}))
"""


def diffdrr_ms(python: str, hu: np.ndarray, aff: np.ndarray, spacing: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "vol.npz", hu=hu, affine=aff, spacing=spacing)
        (Path(tmp) / "run.py").write_text(DIFFDRR_SCRIPT)
        res = subprocess.run([python, str(Path(tmp) / "run.py"), str(Path(tmp) / "vol.npz")],
                             capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise SystemExit(f"DiffDRR run failed:\n{res.stderr[-2000:]}")
        return float(json.loads(res.stdout.strip().splitlines()[-1])["ms"])


@njit(parallel=True, cache=True)
def _stream_sum(a):
    n = a.shape[0]
    chunks = 64
    part = np.zeros(chunks)
    for c in prange(chunks):
        acc = 0.0
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            acc += a[i]
        part[c] = acc
    return part.sum()


def voxel_steps(proj: Projector, src: np.ndarray, tgt: np.ndarray) -> float:
    """Voxel crossings of all rays (the traversal's loop iterations)."""
    s = proj.to_index(src)
    t = proj.to_index(tgt)
    d = t - s
    n = np.array(proj.shape, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (-0.5 - s) / d, (n - 0.5 - s) / d
    lo = np.clip(np.nanmax(np.minimum(t0, t1), axis=1), 0, 1)
    hi = np.clip(np.nanmin(np.maximum(t0, t1), axis=1), 0, 1)
    return float((np.clip(hi - lo, 0, None) * np.abs(d).sum(axis=1)).sum())


def one_round(args) -> dict:
    res = {}
    hu, aff = phantom(128)
    mu = hu_to_mu(hu, 60.0)
    pose = standard_poses(["pa"], hu.shape, aff, size=128)[0]
    src, tgt = pose_rays(pose, hu.shape, aff)
    proj = Projector(mu, aff)
    res["ours_ms"] = 1000 * timeit(lambda: proj.line_integrals(src, tgt), 20)
    res["ours_with_setup_ms"] = 1000 * timeit(lambda: Projector(mu, aff).line_integrals(src, tgt), 10)
    res["asis_layout_ms"] = 1000 * timeit(lambda: proj.line_integrals(src, tgt, layout="asis"), 10)
    if args.diffdrr_python:
        res["reference"] = "DiffDRR Siddon"
        res["reference_ms"] = diffdrr_ms(args.diffdrr_python, hu, aff, pose.spacing[0])
    else:
        res["reference"] = "torch grid_sample (256 samples/ray)"
        res["reference_ms"] = 1000 * timeit(grid_sample_renderer(mu, aff, src, tgt), 3)
    steps = voxel_steps(proj, src, tgt)
    res["steps_per_s"] = steps / (res["ours_ms"] / 1000)
    big = np.ones(1 << 26, np.float32)
    res["stream_elems_per_s"] = big.size / timeit(lambda: _stream_sum(big), 5)
    hu2, aff2 = phantom(256)
    pose2 = standard_poses(["pa"], hu2.shape, aff2, size=256)[0]
    s2, t2 = pose_rays(pose2, hu2.shape, aff2)
    proj2 = Projector(hu_to_mu(hu2, 60.0), aff2)
    res["img256_per_s"] = 1.0 / timeit(lambda: proj2.line_integrals(s2, t2), 5)
    items = [{"image": hu, "affine": aff}] * 24
    renderer = DRRRenderer(views=("pa", "lateral"), size=128)
    loader = loader_for(items, renderer, num_workers=1)
    t = time.perf_counter()
    for _ in loader:
        pass
    res["worker_drr_per_s"] = 2 * len(items) / (time.perf_counter() - t)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--diffdrr-python", default=None, help="a Python interpreter with diffdrr installed")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rounds = [one_round(args) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k != "reference"}
    from numba import get_num_threads

    print(f"cpu cores {os.cpu_count()}, numba threads {get_num_threads()}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} rounds")
    print(f"128^3 -> 128^2  medssl siddon: {med['ours_ms']:.2f} ms/image "
          f"({med['ours_with_setup_ms']:.2f} ms with volume setup)")
    print(f"128^3 -> 128^2  {rounds[0]['reference']}: {med['reference_ms']:.1f} ms/image")
    print(f"ratio reference / medssl: {med['reference_ms'] / med['ours_ms']:.1f}x "
          f"(vs DiffDRR's ~500 ms on 2 cores: {500.0 / med['ours_ms']:.0f}x)")
    print(f"layout: stored order {med['asis_layout_ms']:.2f} ms vs most-crossed axis contiguous "
          f"{med['ours_ms']:.2f} ms ({med['asis_layout_ms'] / med['ours_ms']:.2f}x)")
    print(f"256^3 -> 256^2  medssl siddon: {med['img256_per_s']:.1f} images/s")
    print(f"voxel steps: {med['steps_per_s'] / 1e6:.0f} M/s vs numba streaming sum {med['stream_elems_per_s'] / 1e6:.0f} "
          f"M elements/s ({med['steps_per_s'] / med['stream_elems_per_s']:.2f} of it)")
    print(f"training source (2 views, 128^2, 128^3 CT, jitter + noise): {med['worker_drr_per_s']:.1f} DRRs/s "
          "in one DataLoader worker")


if __name__ == "__main__":
    main()
