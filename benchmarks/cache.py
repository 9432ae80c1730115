"""Patch loading from the medssl cache against MONAI CacheDataset, measured in the same run.

Data: N volumes of 160 x 160 x 128 voxels (x, y, z) written as NIfTI and
preprocessed into a medssl cache (float16, (Z, Y, X) memory maps). Both
loaders yield batches of 8 random 96^3 patches, each flipped at random
along every axis (p = 0.5), with 2 DataLoader workers, float32 in the main
process at the end:

  medssl  PatchSource(patches_per_volume=4, flip_prob=0.5) + make_loader, batch 8;
          float16 through the worker queue, batch_to(float32) in the main process
  monai   CacheDataset(LoadImaged, EnsureChannelFirstd, ScaleIntensityRanged) +
          RandSpatialCropSamplesd(num_samples=4) + RandFlipd x 3, batch 2 volumes
          x 4 samples (list_data_collate)

Prints patches/s for each and the ratio, then the memory of the medssl
loader with 8 and with 16 volumes: per worker, RSS, the part of it that is
pages of the memory-mapped cache (shared page cache, reclaimable), and the
private memory outside them, showing that a worker holds no copy of the
volumes. The medssl rate is given as delivered (float16, to be converted
on the GPU by batch_to) and with the float32 conversion done on the CPU.

    python benchmarks/cache.py [--volumes 16] [--batches 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

SHAPE = (160, 160, 128)  # x, y, z
PATCH = 96


def write_volumes(root: Path, n: int) -> Path:
    """``n`` smooth random 'CT' volumes (all above -500 HU, so the body crop keeps the full size)."""
    from medssl.io.writers import write_nifti

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        coarse = rng.normal(0, 200, size=(10, 10, 8)).astype(np.float32)
        vol = np.kron(coarse, np.ones((16, 16, 16), np.float32)) + 100.0
        write_nifti(vol, root / f"vol{i:02d}.nii", affine=np.eye(4))
        lines.append(f'{{"id": "vol{i:02d}", "image": "vol{i:02d}.nii", "modality": "ct"}}\n')
    (root / "manifest.jsonl").write_text("".join(lines))
    return root / "manifest.jsonl"


def worker_memory() -> List[Dict[str, float]]:
    """Per child process (the DataLoader workers), in MB: RSS; pages of the cache's memory-mapped
    .npy files (shared page cache); private memory outside them (what a worker holds on its own)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            maps = child.memory_maps(grouped=True)
            mapped = sum(m.rss for m in maps if m.path.endswith(".npy"))
            private = sum(m.private_clean + m.private_dirty for m in maps if not m.path.endswith(".npy"))
            out.append({"rss_mb": child.memory_info().rss / 2**20, "npy_mb": mapped / 2**20,
                        "private_mb": private / 2**20})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def endless(loader):
    """Batches of successive epochs without end."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_loader(loader, n_batches: int, warmup: int = 3, memory: bool = False, convert: bool = True):
    """Patches per second over ``n_batches`` after ``warmup`` batches; with ``convert`` the batch is
    made float32 in the main process (CPU training), else left as delivered (to be converted on the GPU)."""
    from medssl.data import batch_to

    it = endless(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        batch = next(it)
        img = batch_to(batch)["image"] if convert else batch["image"]
        assert (img.dtype == torch.float32 or not convert) and tuple(img.shape[-3:]) == (PATCH,) * 3
        n += img.shape[0]
    rate = n / (time.perf_counter() - t0)
    mem = worker_memory() if memory else []
    del it
    return rate, mem


def medssl_loader(cache_dir: Path, ids: List[str], workers: int, seed: int = 0):
    from medssl.data import PatchSource, make_loader

    src = PatchSource(cache_dir, patch_size=(PATCH,) * 3, patches_per_volume=4, flip_prob=0.5, ids=ids, seed=seed)
    return make_loader(src, batch_size=8, workers=workers, seed=seed, prefetch_factor=2)


def monai_loader(root: Path, n: int, workers: int):
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, RandFlipd, RandSpatialCropSamplesd,
                                  ScaleIntensityRanged)

    files = [{"image": str(root / f"vol{i:02d}.nii")} for i in range(n)]
    transform = Compose([
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        ScaleIntensityRanged(keys="image", a_min=-1024, a_max=3071, b_min=0.0, b_max=1.0, clip=True),
        RandSpatialCropSamplesd(keys="image", roi_size=(PATCH,) * 3, num_samples=4, random_size=False),
        RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        RandFlipd(keys="image", prob=0.5, spatial_axis=1),
        RandFlipd(keys="image", prob=0.5, spatial_axis=2),
    ])
    ds = CacheDataset(files, transform=transform, cache_rate=1.0, num_workers=workers, progress=False)
    return DataLoader(ds, batch_size=2, shuffle=True, num_workers=workers, collate_fn=list_data_collate,
                      prefetch_factor=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=16)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repeats; the best of each is reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import psutil

    from medssl.preprocess import preprocess_manifest

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        manifest = write_volumes(root, args.volumes)
        t1 = time.perf_counter()
        preprocess_manifest(manifest, root / "cache", spacing=(1, 1, 1), workers=args.workers, progress=False)
        print(f"wrote the volumes in {t1 - t0:.1f} s, preprocessed them in {time.perf_counter() - t1:.1f} s")
        ids = [f"vol{i:02d}" for i in range(args.volumes)]
        print(f"{args.volumes} volumes of {SHAPE} (x, y, z), {PATCH}^3 patches with random flips, batch 8, "
              f"{args.workers} workers, {os.cpu_count()} CPUs")
        print("memory of the medssl loader (measured first, before MONAI fills the main process):")
        for n in (max(1, args.volumes // 2), args.volumes):
            main_before = psutil.Process().memory_info().rss / 2**20
            _, mem = time_loader(medssl_loader(root / "cache", ids[:n], args.workers, seed=1), args.batches,
                                 memory=True)
            per = "; ".join(f"rss {m['rss_mb']:.0f}, cache pages {m['npy_mb']:.0f}, private {m['private_mb']:.0f}"
                            for m in mem)
            print(f"  {n:3d} volumes: workers (MB) [{per}]; main process rss {main_before:.0f} MB")

        # interleave: medssl, monai, medssl, monai; keep the best of each (least disturbed by other load)
        ours, ours_f32, theirs = [], [], []
        mon = monai_loader(root, args.volumes, args.workers)
        for _ in range(args.rounds):
            ours.append(time_loader(medssl_loader(root / "cache", ids, args.workers), args.batches, convert=False)[0])
            ours_f32.append(time_loader(medssl_loader(root / "cache", ids, args.workers), args.batches)[0])
            theirs.append(time_loader(mon, args.batches)[0])
        runs = lambda r: ", ".join(f"{v:.1f}" for v in r)  # noqa: E731
        print(f"medssl, float16 batches (float32 on the GPU) : {max(ours):7.1f} patches/s  (runs: {runs(ours)})")
        print(f"medssl, float32 made on the CPU              : {max(ours_f32):7.1f} patches/s  (runs: {runs(ours_f32)})")
        print(f"MONAI CacheDataset, float32                  : {max(theirs):7.1f} patches/s  (runs: {runs(theirs)})")
        print(f"ratio medssl / MONAI: {max(ours) / max(theirs):.2f}x as delivered, "
              f"{max(ours_f32) / max(theirs):.2f}x with the float32 conversion on the CPU")
        del mon


if __name__ == "__main__":
    main()
