"""DRR speed: medssl's Siddon against DiffDRR and against today's training path, in the same run.

    .venv/bin/python benchmarks/drr.py [--repeats 3] [--diffdrr-python /path/to/python]

``--diffdrr-python`` names a Python that has DiffDRR installed, with the
same torch version as this one; its site-packages are appended to this
process's path, so DiffDRR runs in this process, on DiffDRR's own geometry
(its detector, pose and volume placement), and medssl renders the very rays
DiffDRR casts (source and target points taken from DiffDRR's detector)
through DiffDRR's density volume. Without it a plain torch ``grid_sample``
renderer written here is the reference (not comparable to DiffDRR).

Prints, each as the median over ``--repeats`` rounds:

- 128^3 CT (2 mm) -> 128^2 detector: ms/image of the reference, of medssl with
  the volume prepared (``Projector`` built once) and of the one-call
  ``medssl.drr.line_integrals``, both ratios, and the largest difference
  between the images relative to the reference's maximum;
- the memory layout: rendering the array as stored vs a contiguous copy;
- images/s for 256^3 -> 256^2;
- voxel steps (crossed voxels) per second against a numba streaming sum over a
  float32 array (one float64 accumulator per thread, both cores);
- the training sources, one DataLoader worker each, against the path they
  took before this change (cast to float32, HU -> attenuation as a new array,
  a transposed copy, the one-voxel-per-step kernel), written out below and
  timed in the same run: ``drr_pairs`` (2 views of 128^2 from a 128^3 HU CT,
  pose jitter and noise) and the UniMiSS+ DRR views (one 128^2 DRR per view
  from a 32 x 150 x 150 crop of a HU/1024 sample), as DRRs per second of
  wall-clock and per CPU-second of the worker process (all its threads, the
  hand-over of each item to the main process included: what a worker costs
  when every core is busy); ``drr_pairs`` also rendered in this process
  without a worker, so that what the hand-over adds per item shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numba import get_num_threads, njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medssl.drr import Pose, Projector, hu_to_mu, line_integrals, pose_rays, standard_poses  # noqa: E402
from medssl.drr import kernels  # noqa: E402
from medssl.drr.geometry import fit_spacing  # noqa: E402
from medssl.drr.physics import noisy_line_integral, window  # noqa: E402
from medssl.drr.source import DRRJitter, DRRRenderer, loader_for  # noqa: E402

SDD, SOD = 1800.0, 1600.0


def phantom(n: int, fov: float = 256.0) -> tuple:
    """A chest-like CT in HU, (n, n, n), ``fov`` mm wide, RAS affine centred on the origin."""
    g = (np.arange(n) - (n - 1) / 2) / (n / 2)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    hu = np.full((n, n, n), -1000.0, np.float32)
    body = (x / 0.9) ** 2 + (y / 0.65) ** 2 < 1
    hu[body] = 40.0
    for side in (-1, 1):
        hu[((x - side * 0.4) / 0.3) ** 2 + (y / 0.4) ** 2 + (z / 0.9) ** 2 < 1] = -850.0
    hu[(x / 0.08) ** 2 + ((y + 0.45) / 0.08) ** 2 < 1] = 1100.0
    aff = np.diag([fov / n] * 3 + [1.0])
    aff[:3, 3] = -fov / 2 + fov / n / 2
    return hu, aff


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


# -- references ---------------------------------------------------------------------------------


def grid_sample_renderer(mu: np.ndarray, aff: np.ndarray, src: np.ndarray, tgt: np.ndarray, n_samples: int = 256):
    """A plain torch renderer: trilinear samples over the bounding sphere's chord, one grid_sample call."""
    vol = torch.from_numpy(np.ascontiguousarray(mu, dtype=np.float32))[None, None]
    inv = torch.from_numpy(np.linalg.inv(aff)).float()
    s, t = torch.from_numpy(src).float(), torch.from_numpy(tgt).float()
    n = torch.tensor(mu.shape, dtype=torch.float32)
    centre = torch.from_numpy(aff[:3, :3] @ ((np.array(mu.shape) - 1) / 2) + aff[:3, 3]).float()
    radius = float(np.linalg.norm(aff[:3, :3] @ (np.array(mu.shape) / 2)))

    def run():
        d = t - s
        u = d / d.norm(dim=1, keepdim=True)
        mid = ((centre - s) * u).sum(dim=1, keepdim=True)
        a = (mid - radius + (torch.arange(n_samples) + 0.5) / n_samples * 2 * radius)  # (R, S) mm from source
        idx = (s[:, None, :] + a[..., None] * u[:, None, :]) @ inv[:3, :3].T + inv[:3, 3]
        grid = (2 * idx / (n - 1) - 1).flip(-1)[None, :, :, None, :]
        vals = F.grid_sample(vol, grid, align_corners=True, padding_mode="zeros")[0, 0, :, :, 0]
        return (vals.sum(dim=1) * (2 * radius / n_samples)).numpy()

    return run


def import_diffdrr(python: str):
    """Append the site-packages of ``python`` (which has DiffDRR) to this process's path and import DiffDRR."""
    probe = ("import json, sys, torch, diffdrr; print(json.dumps({'path': sys.path, 'torch': torch.__version__, "
             "'diffdrr': diffdrr.__version__}))")
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise SystemExit(f"--diffdrr-python: {python} cannot import diffdrr:\n{res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if info["torch"] != torch.__version__:
        raise SystemExit(f"--diffdrr-python: torch {info['torch']} there, {torch.__version__} here; "
                         "DiffDRR runs in this process, so the versions must match")
    sys.path.extend(p for p in info["path"] if p and "site-packages" in p and p not in sys.path)
    import torchio
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import convert

    return info["diffdrr"], torchio, read, DRR, convert


class DiffDRRCase:
    """DiffDRR's Siddon renderer on the phantom, and the rays it casts, in world mm."""

    def __init__(self, modules, hu: np.ndarray, aff: np.ndarray, spacing: float, size: int):
        _, torchio, read, DRR, convert = modules
        subject = read(torchio.ScalarImage(tensor=torch.from_numpy(hu)[None], affine=aff))
        self.drr = DRR(subject, sdd=SDD, height=size, delx=spacing, renderer="siddon")
        self.pose = convert(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, SOD, 0.0]]),
                            parameterization="euler_angles", convention="ZXY")
        with torch.no_grad():
            src, tgt = self.drr.detector(self.pose, None)
        self.source = src.reshape(-1, 3).double().numpy()
        self.target = tgt.reshape(-1, 3).double().numpy()
        self.density = self.drr.density.numpy()  # (X, Y, Z), prepared once by DiffDRR
        self.affine = np.asarray(subject.volume.affine, dtype=np.float64)

    def render(self) -> np.ndarray:
        with torch.no_grad():
            return self.drr(self.pose).reshape(-1).double().numpy()


# -- today's training path (before in-place rendering), kept here as the baseline ----------------


class TodayProjector:
    """The Projector as it was: float32 cast, a transposed copy per layout, numpy index maps per tile."""

    def __init__(self, density: np.ndarray, voxel_to_world: np.ndarray):
        self.density = np.asarray(density).astype(np.float32, copy=False)
        self.affine = np.asarray(voxel_to_world, dtype=np.float64)
        self.world_to_voxel = np.linalg.inv(self.affine)
        self._layouts = {}

    @property
    def shape(self):
        return tuple(self.density.shape)

    def to_index(self, p):
        m = self.world_to_voxel
        return p @ m[:3, :3].T + m[:3, 3]

    def line_integrals(self, src, tgt, tile: int = 1 << 16):
        src_idx = self.to_index(src)
        probe = slice(None, None, max(1, tgt.shape[0] // 64))
        crossings = np.abs(self.to_index(tgt[probe]) - np.broadcast_to(src_idx, tgt.shape)[probe]).mean(axis=0)
        perm = tuple(int(a) for a in np.argsort(crossings, kind="stable"))
        if perm not in self._layouts:
            self._layouts[perm] = np.ascontiguousarray(self.density.transpose(perm))
        dens, order = self._layouts[perm], list(perm)
        out = np.empty(tgt.shape[0])
        for lo in range(0, tgt.shape[0], tile):
            t_w = tgt[lo:lo + tile]
            length = np.linalg.norm(t_w - src, axis=1)
            t_i = np.ascontiguousarray(self.to_index(t_w)[:, order])
            s_i = np.ascontiguousarray(np.broadcast_to(src_idx[:, order], t_i.shape))
            kernels.siddon_reference(dens, s_i, t_i, length, out[lo:lo + tile])
        return out


class TodayRenderer(DRRRenderer):
    """DRRRenderer as it was: HU as a float32 copy, attenuation as a new array, TodayProjector."""

    def __call__(self, volume, voxel_to_world, rng, *, hu_window=None):
        j = self.jitter
        hu = self.to_hu(volume)
        energy = float(rng.uniform(*j.energy_kev))
        bone = float(rng.uniform(*j.bone_scale))
        proj = TodayProjector(hu_to_mu(hu, energy, bone_scale=bone), voxel_to_world)
        spacing = fit_spacing(hu.shape, proj.affine, views=self.views, size=(self.size, self.size),
                              sdd=self.sdd, sod=self.sod)
        xrays, raws, params = [], [], []
        for view in self.views:
            rot = tuple(float(x) for x in rng.uniform(-j.rotation_deg, j.rotation_deg, 3))
            shift = tuple(float(x) for x in rng.uniform(-j.translation_mm, j.translation_mm, 3))
            pose = Pose(view=view, rotation=rot, translation=shift, sdd=self.sdd, sod=self.sod,
                        size=(self.size, self.size), spacing=spacing)
            src, tgt = pose_rays(pose, proj.shape, proj.affine)
            raw = proj.line_integrals(src, tgt).reshape(self.size, self.size)
            photons, shown = None, raw
            if j.photons is not None:
                photons = float(np.exp(rng.uniform(np.log(j.photons[0]), np.log(j.photons[1]))))
                shown = noisy_line_integral(raw, photons, rng)
            xrays.append(window(shown, bits=None))
            raws.append(raw.astype(np.float32))
            params.append({"view": view, "rotation": rot, "translation": shift, "energy_kev": energy,
                           "bone_scale": bone, "photons": photons})
        return {"xray": np.stack(xrays), "line_integrals": np.stack(raws), "params": params}


class _Renders(torch.utils.data.Dataset):
    """Item i renders through ``fn(i)`` and returns how many DRRs it made (for a DataLoader worker)."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.fn(i)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loader_rates(loader, n_items: int, per_item) -> tuple:
    """DRRs per second of wall-clock and per CPU-second of the worker (all its threads, the hand-over of
    the items included) of a one-worker DataLoader; start-up excluded (measured from the first item)."""
    it = iter(loader)
    next(it)
    pid = it._workers[0].pid
    c, t = _cpu_s(pid), time.perf_counter()
    count = sum(per_item(next(it)) for _ in range(n_items - 1))
    wall, cpu = time.perf_counter() - t, _cpu_s(pid) - c
    for _ in it:  # the worker exits once the loader is drained
        pass
    return count / wall, count / max(cpu, 1e-9)


def inprocess_rate(dataset, n_items: int, per_item) -> float:
    """DRRs per second of ``dataset[i]`` called in this process (no worker, no hand-over); first item excluded."""
    dataset[0]
    t = time.perf_counter()
    count = sum(per_item(dataset[i]) for i in range(1, n_items))
    return count / (time.perf_counter() - t)


def worker_rate(fn, n: int) -> tuple:
    """DRRs/s of ``fn`` run inside one DataLoader worker: (per second, per worker CPU-second)."""
    loader = torch.utils.data.DataLoader(_Renders(fn, n + 1), batch_size=None, num_workers=1)
    return loader_rates(loader, n + 1, int)


def unimiss_crops(sample: torch.Tensor, renderer, rng_seed: int, today: bool):
    """One UniMiSS+ DRR view: a 150 x 150 in-plane crop of the HU/1024 sample, rendered as the views do."""
    rng = np.random.default_rng(rng_seed)
    _, d, h, w = sample.shape
    y0, x0 = int(rng.integers(0, h - 150 + 1)), int(rng.integers(0, w - 150 + 1))
    sub = sample[:, :, y0:y0 + 150, x0:x0 + 150]
    aff = np.diag([1.6, 1.6, 2.5, 1.0])
    aff[:3, 3] = (x0 * 1.6, y0 * 1.6, 0.0)
    if today:
        hu = sub[0].numpy().astype(np.float32) * 1024.0
        renderer(hu, aff, rng)
    else:
        renderer(sub[0], aff, rng, hu_window=(0.0, 1024.0))
    return 1


# -- one round ------------------------------------------------------------------------------------


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


def voxel_steps(density_shape, affine, src: np.ndarray, tgt: np.ndarray) -> float:
    """Voxel crossings of all rays: the plane crossings inside the volume, summed over the three axes."""
    inv = np.linalg.inv(affine)
    s = np.broadcast_to(src, tgt.shape) @ inv[:3, :3].T + inv[:3, 3]
    t = tgt @ inv[:3, :3].T + inv[:3, 3]
    d = t - s
    n = np.array(density_shape, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (-0.5 - s) / d, (n - 0.5 - s) / d
    lo = np.clip(np.nanmax(np.minimum(t0, t1), axis=1), 0, 1)
    hi = np.clip(np.nanmin(np.maximum(t0, t1), axis=1), 0, 1)
    return float((np.clip(hi - lo, 0, None) * np.abs(d).sum(axis=1)).sum())


def one_round(args, diffdrr) -> dict:
    res = {}
    hu, aff = phantom(128)
    pose = standard_poses(["pa"], hu.shape, aff, size=128, sdd=SDD, sod=SOD)[0]
    if diffdrr is not None:
        case = DiffDRRCase(diffdrr, hu, aff, pose.spacing[0], 128)
        dens, d_aff, src, tgt = case.density, case.affine, case.source, case.target
        theirs = case.render()
        res["reference_ms"] = median_ms(case.render, args.reference_reps)
    else:
        dens, d_aff = hu_to_mu(hu, 60.0), aff
        src, tgt = pose_rays(pose, hu.shape, aff)
        ref = grid_sample_renderer(dens, aff, src, tgt)
        theirs = ref()
        res["reference_ms"] = median_ms(ref, args.reference_reps)
    proj = Projector(dens, d_aff)
    ours = proj.line_integrals(src, tgt)
    res["rel_error"] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    res["prepared_ms"] = median_ms(lambda: proj.line_integrals(src, tgt), 20)
    res["one_call_ms"] = median_ms(lambda: line_integrals(dens, d_aff, src, tgt), 20)
    res["contiguous_ms"] = median_ms(lambda: proj.line_integrals(src, tgt, layout="contiguous"), 20)
    res["steps_per_s"] = voxel_steps(dens.shape, d_aff, src, tgt) / (res["prepared_ms"] / 1000)
    big = np.ones(1 << 26, np.float32)
    res["stream_elems_per_s"] = big.size / (median_ms(lambda: _stream_sum(big), 5) / 1000)
    del big
    hu2, aff2 = phantom(256)
    pose2 = standard_poses(["pa"], hu2.shape, aff2, size=256, sdd=SDD, sod=SOD)[0]
    s2, t2 = pose_rays(pose2, hu2.shape, aff2)
    proj2 = Projector(hu_to_mu(hu2, 60.0), aff2)
    res["img256_per_s"] = 1000.0 / median_ms(lambda: proj2.line_integrals(s2, t2), 5)
    del hu2, proj2
    # training sources, one DataLoader worker each, today's path and the current one in turn
    items = [{"image": hu, "affine": aff}] * 17
    for name, cls in (("today", TodayRenderer), ("now", DRRRenderer)):
        renderer = cls(views=("pa", "lateral"), size=128, sdd=SDD, sod=SOD)
        loader = loader_for(items, renderer, num_workers=1)
        res[f"pairs_{name}"], res[f"pairs_cpu_{name}"] = loader_rates(loader, len(items), lambda b: 2 * len(b))
        res[f"pairs_local_{name}"] = inprocess_rate(loader.dataset, len(items), lambda item: 2)
    sample = torch.from_numpy(np.ascontiguousarray(phantom(176, 281.6)[0][:, :, 72:104].transpose(2, 1, 0)) / 1024.0)[None]
    jitter = DRRJitter(rotation_deg=5.0, translation_mm=10.0)
    for name, cls in (("today", TodayRenderer), ("now", DRRRenderer)):
        renderer = cls(views=("pa",), size=128, sdd=2000.0, sod=1800.0, jitter=jitter, axis_order="zyx")
        res[f"unimiss_{name}"], res[f"unimiss_cpu_{name}"] = worker_rate(
            lambda i: unimiss_crops(sample, renderer, i, name == "today"), 24)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-reps", type=int, default=5, help="renders of the reference per round")
    ap.add_argument("--diffdrr-python", default=None, help="a Python interpreter with diffdrr installed")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    diffdrr = import_diffdrr(args.diffdrr_python) if args.diffdrr_python else None
    rounds = [one_round(args, diffdrr) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ref = f"DiffDRR {diffdrr[0]} Siddon" if diffdrr else "torch grid_sample (256 samples/ray, not DiffDRR)"
    geometry = "DiffDRR's geometry and rays" if diffdrr else "medssl's PA geometry"
    print(f"cpu cores {os.cpu_count()}, numba threads {get_num_threads()}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} rounds")
    print(f"128^3 (2 mm) -> 128^2, {geometry}, SDD {SDD:g} / SOD {SOD:g} mm")
    print(f"  {ref}: {med['reference_ms']:.1f} ms/image")
    print(f"  medssl Projector.line_integrals (volume prepared): {med['prepared_ms']:.2f} ms/image "
          f"-> {med['reference_ms'] / med['prepared_ms']:.1f}x")
    print(f"  medssl.drr.line_integrals (one call): {med['one_call_ms']:.2f} ms/image "
          f"-> {med['reference_ms'] / med['one_call_ms']:.1f}x")
    print(f"  max |medssl - reference| / max |reference|: {med['rel_error']:.1e}")
    print(f"layout: as stored {med['prepared_ms']:.2f} ms vs a copy with the most-crossed axis contiguous "
          f"{med['contiguous_ms']:.2f} ms")
    print(f"256^3 -> 256^2  medssl siddon: {med['img256_per_s']:.1f} images/s")
    print(f"voxel steps: {med['steps_per_s'] / 1e6:.0f} M/s vs numba streaming sum {med['stream_elems_per_s'] / 1e6:.0f} "
          f"M elements/s ({med['steps_per_s'] / med['stream_elems_per_s']:.2f} of it)")
    print(f"training source drr_pairs (2 views 128^2 from a 128^3 HU CT, jitter + noise), one worker: "
          f"{med['pairs_now']:.1f} DRRs/s vs today's path {med['pairs_today']:.1f} "
          f"({med['pairs_now'] / med['pairs_today']:.1f}x); per CPU-second of the worker "
          f"{med['pairs_cpu_now']:.1f} vs {med['pairs_cpu_today']:.1f} ({med['pairs_cpu_now'] / med['pairs_cpu_today']:.1f}x)")
    hand_over = [1000.0 * (2 / med[f"pairs_{k}"] - 2 / med[f"pairs_local_{k}"]) for k in ("now", "today")]
    print(f"  the same items rendered in this process (no worker): {med['pairs_local_now']:.1f} DRRs/s vs "
          f"{med['pairs_local_today']:.1f} ({med['pairs_local_now'] / med['pairs_local_today']:.1f}x); the worker "
          f"adds {hand_over[0]:.1f} / {hand_over[1]:.1f} ms per item (2 DRRs and the 8 MB CT handed back)")
    print(f"UniMiSS+ DRR views (128^2 from a 32 x 150 x 150 crop of a HU/1024 sample), one worker: "
          f"{med['unimiss_now']:.1f} DRRs/s vs today's path {med['unimiss_today']:.1f} "
          f"({med['unimiss_now'] / med['unimiss_today']:.1f}x); per CPU-second of the worker "
          f"{med['unimiss_cpu_now']:.1f} vs {med['unimiss_cpu_today']:.1f} "
          f"({med['unimiss_cpu_now'] / med['unimiss_cpu_today']:.1f}x)")


if __name__ == "__main__":
    main()
