"""On-the-fly DRRs for training: paired X-rays rendered from each CT inside DataLoader workers.

:class:`DRRRenderer` turns one CT (patch or volume, in HU or in a [0, 1]
window that maps back to HU) and its affine into X-rays of the named views,
with random pose jitter (rotation, isocentre shift) and intensity-model
variation (photon energy, bone contrast, quantum noise). It renders with the
single-threaded kernel, so each DataLoader worker uses one core and the
parallelism comes from the workers.

:class:`DRRPairs` wraps a dataset of CTs; its random numbers come from
``numpy.random.default_rng([seed, epoch, index])``, so an item is the same
whatever worker renders it (call :meth:`DRRPairs.set_epoch` each epoch).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..registry import SOURCES
from .geometry import Pose, fit_spacing, pose_rays
from . import kernels
from .physics import mu_map, noisy_line_integral
from .physics import window as window_image
from .render import Projector


@dataclass
class DRRJitter:
    """Ranges of the random variation per rendered X-ray (uniform unless noted).

    Attributes:
        rotation_deg: each Euler angle in [-r, r] degrees.
        translation_mm: each isocentre coordinate shifted by [-t, t] mm.
        energy_kev: effective photon energy range, keV.
        bone_scale: multiplier range of the bone-water contrast.
        photons: photons per pixel, log-uniform in the range; None: no noise.
    """

    rotation_deg: float = 3.0
    translation_mm: float = 5.0
    energy_kev: Tuple[float, float] = (50.0, 80.0)
    bone_scale: Tuple[float, float] = (0.9, 1.1)
    photons: Optional[Tuple[float, float]] = (2e4, 2e5)


class DRRRenderer:
    """Render paired X-rays from a CT with random pose and intensity variation.

    Args:
        views: named base views (see :mod:`medssl.drr.geometry`).
        size: square detector size in pixels.
        sdd, sod: source-to-detector and source-to-isocentre distances, mm.
        jitter: the random ranges; ``DRRJitter(0, 0, (60, 60), (1, 1), None)`` renders fixed X-rays.
        hu_window: when the input is normalised, the (low, high) HU that 0 and 1 map to
            (``hu = low + x * (high - low)``); None: the input is in HU.
        mode: ``"siddon"`` or ``"trilinear"``.
        axis_order: ``"xyz"`` for (X, Y, Z) arrays (readers), ``"zyx"`` for cache arrays
            (Z, Y, X) whose affine still maps (x, y, z) indices.
    """

    def __init__(self, *, views: Sequence[str] = ("pa", "lateral"), size: int = 128, sdd: float = 1800.0,
                 sod: float = 1600.0, jitter: Optional[DRRJitter] = None,
                 hu_window: Optional[Tuple[float, float]] = None, mode: str = "siddon", axis_order: str = "xyz"):
        if size < 1:
            raise ValueError(f"size: detector size must be at least 1 pixel, got {size}")
        if axis_order not in ("xyz", "zyx"):
            raise ValueError(f"axis_order: expected 'xyz' or 'zyx', got {axis_order!r}")
        if hu_window is not None:
            hu_window = _check_window(hu_window)
        self.views = tuple(views)
        self.size, self.sdd, self.sod = int(size), float(sdd), float(sod)
        self.jitter = jitter or DRRJitter()
        self.hu_window, self.mode, self.axis_order = hu_window, mode, axis_order

    def volume(self, volume: Any) -> np.ndarray:
        """The input as the kernels read it, (X, Y, Z), without a copy (a ``[1, ...]`` array squeezed,
        cache order transposed back, a CPU tensor viewed as numpy)."""
        a = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise ValueError(f"volume: expected a 3D array (or [1, ...] tensor), got shape {a.shape}")
        return a.transpose(2, 1, 0) if self.axis_order == "zyx" else a

    def to_hu(self, volume: np.ndarray) -> np.ndarray:
        """Input array -> HU, (X, Y, Z) float32 (a copy; rendering reads the input itself)."""
        a = self.volume(volume).astype(np.float32)
        if self.hu_window is not None:
            lo, hi = self.hu_window
            a = lo + a * (hi - lo)
        return a

    def __call__(self, volume: Any, voxel_to_world: np.ndarray, rng: np.random.Generator, *,
                 hu_window: Optional[Tuple[float, float]] = None) -> Dict[str, Any]:
        """Render ``len(views)`` X-rays.

        The kernels read ``volume`` where it lies (any axis order, crop or
        dtype, e.g. a float16 cache memmap) and turn its values into
        attenuation as they go (:func:`medssl.drr.physics.mu_map`); 8- and
        16-bit codes through a table. A float volume rendered in several views
        is turned into attenuation once instead, as a float32 volume in a
        buffer the thread keeps for its next call (up to
        :data:`SCRATCH_KEEP` voxels), which every view then reads; that is
        one pass over the volume against a map per voxel step per view, and
        rounds the attenuation to float32 (relative 6e-8).

        Args:
            volume: (X, Y, Z) array (``axis_order`` "zyx": (Z, Y, X)), in HU or in ``hu_window``.
            voxel_to_world: (4, 4) affine of the (x, y, z) indices.
            rng: the generator of the pose and intensity jitter.
            hu_window: for this call, the (low, high) HU that 0 and 1 map to (default: the
                renderer's ``hu_window``); HU / 1024 is ``(0, 1024)``.

        Returns ``xray`` (V, H, W) float32 in [0, 1] (bone bright, noisy when
        photons are set), ``line_integrals`` (V, H, W) float32 (noise-free) and
        ``params`` (per view: rotation, translation, energy, bone_scale, photons).
        """
        window = self.hu_window if hu_window is None else _check_window(hu_window)
        offset, scale = (0.0, 1.0) if window is None else (float(window[0]), float(window[1] - window[0]))
        j = self.jitter
        vol = self.volume(volume)
        energy = float(rng.uniform(*j.energy_kev))
        bone = float(rng.uniform(*j.bone_scale))
        values = mu_map(energy, bone_scale=bone, hu_offset=offset, hu_scale=scale)
        if len(self.views) > 1 and vol.dtype.kind == "f" and vol.dtype.itemsize >= 4:
            # several views of a float CT: attenuation once, as float32, read by every view without a map
            proj, values = Projector(kernels.map_to_float32(vol, values, _scratch(vol.size)), voxel_to_world,
                                     parallel=False), None
        else:  # one view, or 8/16-bit codes (mapped through a table): the kernels map values as they read
            proj = Projector(vol, voxel_to_world, parallel=False)
        spacing = fit_spacing(vol.shape, proj.affine, views=self.views, size=(self.size, self.size),
                              sdd=self.sdd, sod=self.sod)
        xrays, raws, params = [], [], []
        for view in self.views:
            rot = tuple(float(x) for x in rng.uniform(-j.rotation_deg, j.rotation_deg, 3))
            shift = tuple(float(x) for x in rng.uniform(-j.translation_mm, j.translation_mm, 3))
            pose = Pose(view=view, rotation=rot, translation=shift, sdd=self.sdd, sod=self.sod,
                        size=(self.size, self.size), spacing=spacing)
            src, tgt = pose_rays(pose, proj.shape, proj.affine)
            raw = proj.line_integrals(src, tgt, mode=self.mode, value_map=values).reshape(self.size, self.size)
            photons = None
            shown = raw
            if j.photons is not None:
                photons = float(np.exp(rng.uniform(np.log(j.photons[0]), np.log(j.photons[1]))))
                shown = noisy_line_integral(raw, photons, rng)
            xrays.append(window_image(shown, bits=None))
            raws.append(raw.astype(np.float32))
            params.append({"view": view, "rotation": rot, "translation": shift, "energy_kev": energy,
                           "bone_scale": bone, "photons": photons})
        return {"xray": np.stack(xrays), "line_integrals": np.stack(raws), "params": params}


#: Volumes up to this many voxels keep their float32 attenuation buffer for the next call of the thread
#: (no fresh pages to fault in per item); larger ones take a new buffer each call.
SCRATCH_KEEP = 1 << 24
_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A float32 buffer of at least ``n`` elements: this thread's kept one where ``n`` is small enough."""
    if n > SCRATCH_KEEP:
        return np.empty(n, dtype=np.float32)
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = _local.buf = np.empty(n, dtype=np.float32)
    return buf


def _check_window(hu_window: Tuple[float, float]) -> Tuple[float, float]:
    lo, hi = (float(v) for v in hu_window)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"hu_window: need finite low < high, got {tuple(hu_window)}")
    return lo, hi


@SOURCES.register("drr_pairs", help="CTs with paired X-rays rendered on the fly (pose and intensity jitter)")
class DRRPairs(torch.utils.data.Dataset):
    """A dataset of CTs with X-rays rendered on the fly.

    Args:
        items: a sequence whose elements are dicts with ``image`` (array or tensor)
            and ``affine`` (4, 4), or a callable ``load(index) -> dict`` with ``length``.
        renderer: the :class:`DRRRenderer`.
        seed: base seed; item ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.
        length: number of items when ``items`` is a callable.

    Each item is the input dict plus ``xray``: float32 tensor [V, 1, H, W] in [0, 1]
    and ``drr_params`` (the drawn pose and intensity parameters).
    """

    def __init__(self, items: Any, renderer: Optional[DRRRenderer] = None, *, seed: int = 0,
                 length: Optional[int] = None):
        self.items = items
        self.renderer = renderer or DRRRenderer()
        self.seed = int(seed)
        self.epoch = 0
        if callable(items) and not hasattr(items, "__len__"):
            if length is None:
                raise ValueError("length: required when items is a loader function")
            self._len = int(length)
        else:
            self._len = len(items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item: Dict[str, Any] = dict(self.items(index) if callable(self.items) and not hasattr(self.items, "__len__")
                                    else self.items[index])
        image = item["image"]
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        out = self.renderer(array, np.asarray(item["affine"], dtype=np.float64), rng)
        item["xray"] = torch.from_numpy(out["xray"])[:, None]
        item["drr_params"] = out["params"]
        return item


def _as_list(batch: list) -> list:
    """Collate that keeps the items as a list (X-ray sizes and params stay per item)."""
    return batch


def loader_for(items: Any, renderer: DRRRenderer, *, seed: int = 0, num_workers: int = 0,
               batch_size: int = 1, collate_fn: Optional[Callable] = None) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`DRRPairs` (the renderer runs inside its workers)."""
    ds = DRRPairs(items, renderer, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                       collate_fn=collate_fn or _as_list)
