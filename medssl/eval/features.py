"""Frozen features: one pooled embedding per case from a backbone.

A case's image (``[Z, Y, X]`` for 3D, ``[H, W]`` for 2D; float in the range
the checkpoint was trained on) enters the encoder in one of three ways:

- ``"resize"``: the whole image resampled (trilinear / bilinear) to the
  checkpoint's patch size, one forward pass;
- ``"crop"``: the central patch-size crop (zero-padded where the image is
  smaller), one forward pass;
- ``"sliding"``: patches of the patch size on a regular grid covering the image
  (stride ``patch * (1 - overlap)``, the last patch flush with the border), the
  embedding being the mean of the patches' embeddings;
- ``"body"`` / ``"lungs"``: the sliding patches that lie at least
  ``REGION_MIN_FRACTION`` inside a mask of the case (the body, the lungs;
  :mod:`medssl.eval.regions`), or the one most inside when none does.

Passes run batched under ``torch.no_grad()`` with the backbone in eval mode.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_MODES = ("resize", "crop", "sliding", "body", "lungs")
#: Modes whose windows are chosen by a mask of the case
REGION_MODES = ("body", "lungs")
#: Share of a window's voxels that must lie inside the region for the window to count
REGION_MIN_FRACTION = 0.25
ImageLike = Union[np.ndarray, torch.Tensor]


def _to_tensor(image: ImageLike) -> torch.Tensor:
    """``[*spatial]`` -> float32 ``[1, *spatial]`` (one channel)."""
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image, dtype=np.float32))
    return t.float().unsqueeze(0)


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[C, *spatial]`` -> ``[C, *size]`` by (bi/tri)linear resampling."""
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return F.interpolate(x.unsqueeze(0), size=tuple(int(s) for s in size), mode=mode, align_corners=False)[0]


def center_crop_or_pad(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[C, *spatial]`` -> ``[C, *size]``: central crop, zero padding where smaller."""
    out = x
    for ax, s in enumerate(size, start=1):
        n = out.shape[ax]
        if n > s:
            start = (n - s) // 2
            out = out.narrow(ax, start, s)
        elif n < s:
            before = (s - n) // 2
            pad_shape = list(out.shape)
            pad_shape[ax] = s
            canvas = out.new_zeros(pad_shape)
            canvas.narrow(ax, before, n).copy_(out)
            out = canvas
    return out


def grid_starts(n: int, patch: int, overlap: float) -> List[int]:
    """Patch start positions along one axis of length ``n`` (``n >= patch``), last flush with the end."""
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, max(n - patch, 0) + 1, step))
    if starts[-1] != max(n - patch, 0):
        starts.append(n - patch)
    return starts


def sliding_patches(x: torch.Tensor, size: Sequence[int], overlap: float = 0.0) -> torch.Tensor:
    """``[C, *spatial]`` -> ``[P, C, *size]`` covering the (padded) image."""
    padded = center_crop_or_pad(x, [max(n, s) for n, s in zip(x.shape[1:], size)])
    axes = [grid_starts(n, s, overlap) for n, s in zip(padded.shape[1:], size)]
    patches = []
    for corner in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(size)):
        sl = (slice(None),) + tuple(slice(int(c), int(c) + int(s)) for c, s in zip(corner, size))
        patches.append(padded[sl])
    return torch.stack(patches)


def prepare(image: ImageLike, patch_size: Sequence[int], mode: str = "resize",
            region: Optional[ImageLike] = None) -> torch.Tensor:
    """One case as the encoder input: ``[1, C, *patch]`` (resize, crop) or ``[P, C, *patch]`` (sliding, regions).

    ``region``: the case's mask (the image's shape) for the region modes.
    """
    if mode not in FEATURE_MODES:
        raise ValueError(f"mode: unknown feature mode '{mode}' (known: {', '.join(FEATURE_MODES)})")
    x = _to_tensor(image)
    if x.ndim - 1 != len(patch_size):
        raise ValueError(f"patch_size: {len(patch_size)}-D patch for an image of shape {tuple(x.shape[1:])}")
    if mode == "resize":
        return resize_to(x, patch_size).unsqueeze(0)
    if mode == "crop":
        return center_crop_or_pad(x, patch_size).unsqueeze(0)
    patches = sliding_patches(x, patch_size)
    if mode not in REGION_MODES:
        return patches
    if region is None:
        raise ValueError(f"region: feature mode '{mode}' needs the case's mask")
    m = _to_tensor(np.asarray(region, dtype=np.float32))
    if m.shape != x.shape:
        raise ValueError(f"region: mask of shape {tuple(m.shape[1:])} for an image of shape {tuple(x.shape[1:])}")
    inside = sliding_patches(m, patch_size).flatten(1).mean(1)  # [P] share of each window inside the region
    keep = inside >= REGION_MIN_FRACTION
    if not bool(keep.any()):
        keep = inside == inside.max()
    return patches[keep]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Iterable[ImageLike],
    *,
    patch_size: Sequence[int],
    mode: str = "resize",
    batch_size: int = 4,
    overlap: float = 0.0,
    device: Union[str, torch.device] = "cpu",
    embed: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    regions: Optional[Iterable[ImageLike]] = None,
) -> np.ndarray:
    """Pooled embeddings ``[N, embed_dim]`` (float32) of ``N`` images.

    Args:
        backbone: a registered backbone (``forward(x) -> [B, embed_dim]``).
        images: ``N`` arrays ``[Z, Y, X]`` (or ``[H, W]`` for 2D backbones).
        patch_size: the checkpoint's patch size, ``spatial_dims`` long.
        mode: ``resize``, ``crop`` or ``sliding`` (see the module docstring).
        batch_size: patches per forward pass.
        overlap: sliding-window overlap in [0, 1).
        embed: optional ``(backbone, x) -> [B, D]`` replacing ``backbone(x)``.
        regions: for the region modes, one mask per image (same order and shapes).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: must lie in [0, 1), got {overlap}")
    was_training = backbone.training
    backbone.eval()
    fn = embed or (lambda m, x: m(x))
    dim = int(getattr(backbone, "embed_dim", 0))
    sums: List[torch.Tensor] = []
    counts: List[int] = []
    buf: List[torch.Tensor] = []
    owner: List[int] = []

    def flush() -> None:
        if not buf:
            return
        emb = fn(backbone, torch.stack(buf).to(device)).float().cpu()  # [b, D]
        for case, e in zip(owner, emb):
            sums[case] = e if sums[case] is None else sums[case] + e
        buf.clear()
        owner.clear()

    try:
        # stream cases: at most ``batch_size`` patches are held at a time
        masks = iter(regions) if regions is not None else None
        for case, img in enumerate(images):
            patches = prepare(img, patch_size, mode, None if masks is None else next(masks))  # [P, C, *patch]
            sums.append(None)  # type: ignore[arg-type]
            counts.append(patches.shape[0])
            for p in patches:
                buf.append(p)
                owner.append(case)
                if len(buf) == batch_size:
                    flush()
        flush()
    finally:
        backbone.train(was_training)
    if not sums:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.stack([s / c for s, c in zip(sums, counts)]).numpy()


def patch_grid_shape(image_shape: Tuple[int, ...], patch_size: Sequence[int], overlap: float = 0.0) -> Tuple[int, ...]:
    """Number of sliding patches per axis for an image (for logs and tests)."""
    return tuple(len(grid_starts(max(n, s), s, overlap)) for n, s in zip(image_shape, patch_size))
