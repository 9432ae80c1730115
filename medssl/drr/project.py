"""Render DRR images for one pose or a batch of poses.

:func:`render` returns raw line integrals (B, H, W); :func:`render_xray`
adds the physics (HU -> attenuation, optional Poisson noise) and display
windowing for images meant to be looked at or trained on.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from .geometry import Pose, pose_rays
from .physics import hu_to_mu, noisy_line_integral, window
from .render import Projector

Poses = Union[Pose, Sequence[Pose]]


def _as_list(poses: Poses) -> list:
    items = [poses] if isinstance(poses, Pose) else list(poses)
    if not items:
        raise ValueError("poses: no pose given")
    for p in items:
        if not isinstance(p, Pose):
            raise ValueError(f"poses: expected Pose objects, got {type(p).__name__}")
    return items


def render(density: Union[np.ndarray, Projector], voxel_to_world: Optional[np.ndarray], poses: Poses, *,
           mode: str = "siddon", step: float = 0.5, backend: str = "numba",
           device: Optional[str] = None) -> np.ndarray:
    """Line integrals (B, H, W) float64 of ``density`` for each pose.

    Args:
        density: (X, Y, Z) attenuation per mm, or a prepared :class:`Projector`
            (then ``voxel_to_world`` may be None); reuse a Projector to render
            many poses of the same volume without re-arranging memory.
        voxel_to_world: (4, 4) affine, voxel index -> world mm.
        poses: a :class:`Pose` or a sequence of them (all the same detector size).
        mode: ``"siddon"`` or ``"trilinear"``; step: trilinear step in mm.
        backend: ``"numba"`` (CPU) or ``"torch"`` (CUDA when available).
    """
    items = _as_list(poses)
    sizes = {tuple(int(s) for s in p.size) for p in items}
    if len(sizes) != 1:
        raise ValueError(f"poses: all poses in a batch need the same detector size, got {sorted(sizes)}")
    h, w = sizes.pop()
    if backend not in ("numba", "torch"):
        raise ValueError(f"backend: expected 'numba' or 'torch', got {backend!r}")
    if isinstance(density, Projector):
        proj = density
    else:
        if voxel_to_world is None:
            raise ValueError("voxel_to_world: required with a plain density array")
        proj = Projector(density, voxel_to_world)
    out = np.empty((len(items), h, w), dtype=np.float64)
    for b, pose in enumerate(items):
        src, tgt = pose_rays(pose, proj.shape, proj.affine)
        if backend == "numba":
            vals = proj.line_integrals(src, tgt, mode=mode, step=step)
        else:
            from .torch_render import line_integrals_torch

            vals = line_integrals_torch(proj.density, proj.affine, src, tgt, mode=mode, step=step,
                                        device=device).cpu().numpy()
        out[b] = vals.reshape(h, w)
    return out


def render_xray(hu: np.ndarray, voxel_to_world: np.ndarray, poses: Poses, *, energy_kev: float = 60.0,
                photons: Optional[float] = None, rng: Optional[np.random.Generator] = None,
                bits: Optional[int] = 8, mode: str = "siddon") -> dict:
    """X-ray images from a CT in HU: attenuation at ``energy_kev``, optional noise, windowing.

    Returns a dict with ``line_integrals`` (B, H, W) float64 (noise-free),
    ``image`` (B, H, W) uint8/uint16 or float32 in [0, 1] (bone bright), and
    ``poses`` (their dicts). ``photons`` (per pixel, unattenuated) adds
    Poisson noise drawn from ``rng``.
    """
    mu = hu_to_mu(hu, energy_kev)
    p = render(mu, voxel_to_world, poses, mode=mode)
    shown = p
    if photons is not None:
        if rng is None:
            raise ValueError("rng: a numpy Generator is required when photons (noise) is set")
        shown = noisy_line_integral(p, photons, rng)
    images = np.stack([window(im, bits=bits) for im in shown])
    return {"line_integrals": p, "image": images, "poses": [q.to_dict() for q in _as_list(poses)]}
