"""Online kNN probe: how well the current encoder's features separate a labelled meta value.

Every ``eval.knn_every`` optimiser steps the trainer embeds a fixed set of
labelled cases (one sample per case id, taken deterministically from the data
source; labels from a manifest meta key such as ``severity``) with the
encoder, and reports the two-fold cosine-kNN accuracy (cases alternate
between the folds within each class; each half is classified by the other) with the weighted
vote of DINO (Caron et al., 2021) from :mod:`medssl.eval.knn`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

__all__ = ["collect_probe_set", "knn_probe"]


def _label_of(source: Any, sample: Dict[str, Any], key: str) -> Optional[Any]:
    """``sample[key]``, ``sample["meta"][key]``, or the manifest meta of the case in the source's cache."""
    if key in sample:
        return sample[key]
    meta = sample.get("meta")
    if isinstance(meta, dict) and key in meta:
        return meta[key]
    cache = getattr(source, "cache", None)
    if cache is not None and hasattr(cache, "record") and "id" in sample:
        return (cache.record(sample["id"]).get("meta") or {}).get(key)
    return None


def collect_probe_set(source: Any, *, label_key: str, max_cases: int = 64) -> Optional[Dict[str, Any]]:
    """``{"images": [N, C, *spatial], "labels": [N] long, "classes": [...]}`` or None when fewer than 4 cases are labelled.

    Reads ``source[0], source[1], ...`` in order, keeping the first sample of
    each case id that has a label under ``label_key`` (in the sample, its
    ``meta``, or the case's manifest meta in the source's cache).
    """
    images: List[torch.Tensor] = []
    raw: List[Any] = []
    seen = set()
    for j in range(len(source)):
        if len(images) >= max_cases:
            break
        s = source[j]
        cid = s.get("id", j)
        lab = _label_of(source, s, label_key)
        if cid in seen or lab is None:
            continue
        seen.add(cid)
        img = s["image"]
        images.append(img if isinstance(img, torch.Tensor) else torch.as_tensor(img))
        raw.append(lab.item() if isinstance(lab, torch.Tensor) else lab)
    if len(images) < 4:
        return None
    classes = sorted(set(raw), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return {"images": torch.stack(images).float(), "labels": torch.tensor([index[v] for v in raw]), "classes": classes}


@torch.no_grad()
def knn_probe(encoder: nn.Module, probe: Dict[str, Any], *, k: int = 5, temperature: float = 0.07, batch_size: int = 16) -> Dict[str, float]:
    """``{"knn_acc": two-fold accuracy in [0, 1], "knn_cases": N}``; the encoder maps ``[B, C, ...] -> [B, D]``."""
    from ..eval.knn import knn_accuracy

    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = torch.cat([encoder(probe["images"][i : i + batch_size].to(device)).float().cpu() for i in range(0, len(probe["images"]), batch_size)])
    encoder.train(was_training)
    y = probe["labels"]
    n_cls = len(probe["classes"])
    fold = torch.zeros(len(y), dtype=torch.long)  # stratified: alternate folds within each class
    for c in range(n_cls):
        members = (y == c).nonzero().flatten()
        fold[members] = torch.arange(len(members)) % 2
    a, b = (fold == 0).nonzero().flatten(), (fold == 1).nonzero().flatten()
    acc_ab = knn_accuracy(feats[a], y[a], feats[b], y[b], k=k, temperature=temperature, num_classes=n_cls)
    acc_ba = knn_accuracy(feats[b], y[b], feats[a], y[a], k=k, temperature=temperature, num_classes=n_cls)
    acc = (acc_ab * len(b) + acc_ba * len(a)) / len(y)
    return {"knn_acc": float(acc), "knn_cases": float(len(y))}
