"""Fine-tuned 3D (or 2D) segmentation: train encoder + decoder, sliding-window inference, Dice and HD95.

- Loss: Dice + cross-entropy (MONAI ``DiceCELoss``), the nnU-Net default
  (Isensee et al., Nature Methods 2021).
- Training samples: random patches of the checkpoint's patch size, centred on
  a foreground voxel with probability ``foreground_prob`` (nnU-Net's
  oversampling of foreground), from a seeded generator.
- Inference: MONAI ``sliding_window_inference`` over the whole volume with
  Gaussian-weighted overlapping patches.
- Metrics per class (background excluded): Dice (MONAI ``DiceMetric``) and
  the 95th-percentile Hausdorff distance (MONAI ``HausdorffDistanceMetric``,
  in mm when a voxel spacing is given, else in voxels). A class absent from
  the ground truth gives NaN and is left out of the means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .seg_model import SegmentationModel


@dataclass
class SegFinetuneConfig:
    """Budget and optimiser of segmentation fine-tuning."""

    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0
    weight_decay: float = 1e-5
    foreground_prob: float = 0.67
    freeze_encoder: bool = False
    overlap: float = 0.25
    sw_batch_size: int = 2


def _pad_to(a: np.ndarray, size: Sequence[int]) -> np.ndarray:
    pads = [(0, max(0, int(s) - n)) for n, s in zip(a.shape, size)]
    return np.pad(a, pads) if any(p[1] for p in pads) else a


def sample_patches(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    patch_size: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    foreground_prob: float = 0.67,
):
    """A batch ``(x [B, 1, *patch] float32, y [B, 1, *patch] int64)`` of random patches."""
    xs, ys = [], []
    for _ in range(batch_size):
        i = int(rng.integers(len(images)))
        img = _pad_to(np.asarray(images[i], dtype=np.float32), patch_size)
        lab = _pad_to(np.asarray(labels[i]), patch_size)
        shape = np.array(img.shape)
        size = np.array(patch_size)
        fg = np.argwhere(lab > 0) if rng.random() < foreground_prob else np.zeros((0, len(size)))
        if len(fg):
            centre = fg[int(rng.integers(len(fg)))]
            start = np.clip(centre - size // 2, 0, shape - size)
        else:
            start = np.array([int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size)])
        sl = tuple(slice(int(a), int(a) + int(s)) for a, s in zip(start, size))
        xs.append(img[sl])
        ys.append(lab[sl].astype(np.int64))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def finetune_segmentation(
    encoder: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_classes: int,
    patch_size: Sequence[int],
    config: Optional[SegFinetuneConfig] = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SegmentationModel:
    """Fine-tune ``encoder`` + a new decoder on ``images[i]`` ``[Z, Y, X]`` with label maps ``labels[i]``.

    ``seed`` fixes the decoder's initialisation and the patch sampling. Returns
    the model in eval mode.
    """
    from monai.losses import DiceCELoss

    cfg = config or SegFinetuneConfig()
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"images/labels: need equally many, at least one ({len(images)} and {len(labels)})")
    torch.manual_seed(seed)
    model = SegmentationModel(encoder, num_classes=num_classes).to(device)
    if cfg.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    groups = [{"params": model.decoder_parameters(), "lr": cfg.lr}]
    if not cfg.freeze_encoder:
        groups.append({"params": list(model.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(cfg.steps):
        x, y = sample_patches(
            images, labels, patch_size=patch_size, batch_size=cfg.batch_size, rng=rng, foreground_prob=cfg.foreground_prob
        )
        loss = loss_fn(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict_segmentation(
    model: nn.Module,
    image: np.ndarray,
    *,
    patch_size: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Label map (uint8, the image's shape) by Gaussian-weighted sliding-window inference."""
    from monai.inferers import sliding_window_inference

    model.eval()
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None].to(device)
    logits = sliding_window_inference(
        x, roi_size=tuple(int(s) for s in patch_size), sw_batch_size=sw_batch_size, predictor=model,
        overlap=overlap, mode="gaussian",
    )
    return logits.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)


def dice_hd95(
    pred: np.ndarray, label: np.ndarray, *, num_classes: int, spacing: Optional[Sequence[float]] = None
) -> Dict[str, np.ndarray]:
    """Per-class (1 .. num_classes-1) ``{"dice": [C-1], "hd95": [C-1]}`` of two label maps of one shape."""
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    p = torch.as_tensor(np.asarray(pred).astype(np.int64))[None, None]
    g = torch.as_tensor(np.asarray(label).astype(np.int64))[None, None]
    if p.shape != g.shape:
        raise ValueError(f"pred: shape {tuple(p.shape[2:])} differs from label {tuple(g.shape[2:])}")
    if int(g.max()) >= num_classes or int(p.max()) >= num_classes:
        raise ValueError(f"num_classes: {num_classes} is too small for the labels present")
    p1, g1 = one_hot(p, num_classes), one_hot(g, num_classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p1, g1)[0].numpy()
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for empty masks; those give NaN / inf here
        kw = {"spacing": [float(s) for s in spacing]} if spacing is not None else {}
        hd95 = hd(p1, g1, **kw)[0].numpy().astype(np.float64)
    gt_present = np.array([(np.asarray(label) == c).any() for c in range(1, num_classes)])
    hd95[~gt_present] = np.nan
    return {"dice": dice.astype(np.float64), "hd95": hd95}


def evaluate_segmentation(
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_classes: int,
    patch_size: Sequence[int],
    spacings: Optional[Sequence[Optional[Sequence[float]]]] = None,
    class_names: Optional[Sequence[str]] = None,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> Dict[str, float]:
    """Mean over test cases of per-class Dice / HD95, plus ``mean_dice`` and ``mean_hd95`` over classes."""
    names = list(class_names) if class_names else [f"class{c}" for c in range(1, num_classes)]
    if len(names) != num_classes - 1:
        raise ValueError(f"class_names: expected {num_classes - 1} names (background excluded), got {len(names)}")
    dices: List[np.ndarray] = []
    hds: List[np.ndarray] = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        pred = predict_segmentation(
            model, img, patch_size=patch_size, overlap=overlap, sw_batch_size=sw_batch_size, device=device
        )
        m = dice_hd95(pred, lab, num_classes=num_classes, spacing=None if spacings is None else spacings[i])
        dices.append(m["dice"])
        hds.append(m["hd95"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN classes
        d = np.nanmean(np.stack(dices), axis=0)
        hd_all = np.stack(hds)
        hd_all[np.isinf(hd_all)] = np.nan  # no prediction of a present class: no finite distance
        h = np.nanmean(hd_all, axis=0)
        out = {f"dice_{n}": float(v) for n, v in zip(names, d)}
        out.update({f"hd95_{n}": float(v) for n, v in zip(names, h)})
        out["mean_dice"] = float(np.nanmean(d))
        out["mean_hd95"] = float(np.nanmean(h))
    return out
