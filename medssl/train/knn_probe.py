"""Online kNN probe: how well the current encoder's features separate a labelled meta value.

The probe set is a fixed, small set of labelled cases (``eval.knn_max_cases``,
default 32; one sample per case id, taken deterministically from the data
source, labels from a manifest meta key, ``eval.knn_label``), collected once.
Each probe embeds it in one no-grad pass with the encoder in eval mode, in
chunks of ``eval.probe_chunk`` cases, and scores the features with a
two-fold cosine kNN (each half is predicted from the other; DINO's
temperature-weighted vote, Caron et al., 2021, from :mod:`medssl.knn`):

- a label with discrete values (integers, strings, booleans): ``knn_acc``, the
  two-fold accuracy (cases alternate between the folds within each class),
  and ``knn_majority``, the share of the most common class in the probe set
  (the accuracy of always guessing it: the probe has learnt something only
  when ``knn_acc`` is above it);
- a continuous label (numbers, not all integers, e.g. ``emphysema_pct``):
  ``knn_spearman``, the Spearman correlation of the kNN-regression prediction
  with the true value (cases sorted by value alternate between the folds;
  chance is 0).

When to probe is decided by :func:`probe_due`: after a probe that took ``c``
seconds, the next one waits until the run has trained for
``c * (1 - share) / share`` seconds (and at least ``eval.knn_every`` steps),
so probing takes at most ``eval.probe_share`` of the wall-clock between
probes, however slow the probe or fast the steps.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..knn import knn_accuracy, knn_regress

__all__ = [
    "collect_probe_set", "probe_features", "knn_probe", "majority_share", "spearman",
    "knn_scores_of", "probe_wait_s", "probe_due",
]


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


def _is_continuous(values: Sequence[Any]) -> bool:
    """Numbers (not booleans), at least one of them not an integer."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(values):
        return False
    return any(isinstance(v, float) and math.isfinite(v) and not float(v).is_integer() for v in nums)


def collect_probe_set(source: Any, *, label_key: str, max_cases: int = 32) -> Optional[Dict[str, Any]]:
    """The probe set, or None when fewer than 4 cases are labelled.

    Reads ``source[0], source[1], ...`` in order, keeping the first sample of
    each case id that has a label under ``label_key`` (in the sample, its
    ``meta``, or the case's manifest meta in the source's cache), up to
    ``max_cases`` cases. Returns ``{"images": [N, C, *spatial] (the source's
    dtype), "ids": [...], "task": "classification" | "regression",
    "labels": [N] long class indices | [N] float values, "classes": [...]
    (classification only), "label_key": label_key}``.
    """
    images: List[torch.Tensor] = []
    raw: List[Any] = []
    ids: List[Any] = []
    seen = set()
    for j in range(len(source)):
        if len(images) >= max_cases:
            break
        s = source[j]
        cid = s.get("id", j)
        lab = _label_of(source, s, label_key)
        if isinstance(lab, torch.Tensor):
            lab = lab.item()
        if cid in seen or lab is None or (isinstance(lab, float) and not math.isfinite(lab)):
            continue
        seen.add(cid)
        img = s["image"]
        images.append(img if isinstance(img, torch.Tensor) else torch.as_tensor(img))
        raw.append(lab)
        ids.append(cid)
    if len(images) < 4:
        return None
    out: Dict[str, Any] = {"images": torch.stack(images), "ids": ids, "label_key": label_key}
    if _is_continuous(raw):
        out.update(task="regression", labels=torch.tensor([float(v) for v in raw], dtype=torch.float64))
    else:
        classes = sorted(set(raw), key=lambda v: (str(type(v)), v))
        index = {c: i for i, c in enumerate(classes)}
        out.update(task="classification", labels=torch.tensor([index[v] for v in raw]), classes=classes)
    return out


@torch.no_grad()
def probe_features(encoder: nn.Module, images: torch.Tensor, *, chunk: int = 4) -> torch.Tensor:
    """``[N, D]`` float32 CPU features of ``images`` in one no-grad pass, ``chunk`` cases per forward.

    The encoder runs in eval mode (batch-norm running statistics, no dropout),
    so a case's features do not depend on the chunk it is in; its mode is
    restored afterwards.
    """
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    was_training = encoder.training
    encoder.eval()
    try:
        p = next(encoder.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        feats = [encoder(images[i : i + chunk].to(device=device, dtype=torch.float32)).float().cpu()
                 for i in range(0, len(images), chunk)]
    finally:
        encoder.train(was_training)
    return torch.cat(feats).flatten(1)


def majority_share(labels: torch.Tensor) -> float:
    """Share of the most common class among ``labels`` (class indices): the accuracy of always guessing it."""
    if labels.numel() == 0:
        return float("nan")
    return float(torch.bincount(labels.long().flatten()).max()) / labels.numel()


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 with ties given their mean rank."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    xs = x[order]
    ranks = torch.empty_like(x)
    i, n = 0, len(xs)
    while i < n:
        j = i
        while j + 1 < n and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (ties at their mean rank); NaN when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def _two_fold(fold: torch.Tensor) -> tuple:
    return (fold == 0).nonzero().flatten(), (fold == 1).nonzero().flatten()


def knn_scores_of(feats: torch.Tensor, probe: Dict[str, Any], *, k: int = 5, temperature: float = 0.07) -> Dict[str, float]:
    """The probe's metrics from features ``[N, D]`` of its cases (see the module docstring)."""
    y = probe["labels"]
    n = len(y)
    if probe.get("task") == "regression":
        fold = torch.zeros(n, dtype=torch.long)
        fold[torch.argsort(y, stable=True)] = torch.arange(n) % 2  # alternate along the sorted values
        a, b = _two_fold(fold)
        pred = torch.empty(n, dtype=torch.float64)
        pred[b] = knn_regress(feats[a], y[a], feats[b], k=min(k, len(a)), temperature=temperature).double()
        pred[a] = knn_regress(feats[b], y[b], feats[a], k=min(k, len(b)), temperature=temperature).double()
        return {"knn_spearman": spearman(pred, y), "knn_cases": float(n)}
    n_cls = len(probe["classes"])
    fold = torch.zeros(n, dtype=torch.long)  # stratified: alternate folds within each class
    for c in range(n_cls):
        members = (y == c).nonzero().flatten()
        fold[members] = torch.arange(len(members)) % 2
    a, b = _two_fold(fold)
    acc_ab = knn_accuracy(feats[a], y[a], feats[b], y[b], k=min(k, len(a)), temperature=temperature, num_classes=n_cls)
    acc_ba = knn_accuracy(feats[b], y[b], feats[a], y[a], k=min(k, len(b)), temperature=temperature, num_classes=n_cls)
    acc = (acc_ab * len(b) + acc_ba * len(a)) / n
    return {"knn_acc": float(acc), "knn_majority": majority_share(y), "knn_cases": float(n)}


def knn_probe(encoder: nn.Module, probe: Dict[str, Any], *, k: int = 5, temperature: float = 0.07, chunk: int = 4) -> Dict[str, float]:
    """Embed the probe set (:func:`probe_features`) and score it (:func:`knn_scores_of`).

    Classification: ``{"knn_acc", "knn_majority", "knn_cases"}``; regression:
    ``{"knn_spearman", "knn_cases"}``. The encoder maps ``[B, C, ...] -> [B, D]``.
    """
    feats = probe_features(encoder, probe["images"], chunk=chunk)
    return knn_scores_of(feats, probe, k=k, temperature=temperature)


def probe_wait_s(probe_s: float, share: float) -> float:
    """Seconds of training after a probe that took ``probe_s`` before the next one may start.

    ``probe_s / (probe_s + wait) = share``: over each probe and the training
    that follows it, the probe takes ``share`` of the wall-clock.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share: must lie in (0, 1], got {share}")
    return max(float(probe_s), 0.0) * (1.0 - share) / share


def probe_due(*, steps_since: int, train_s_since: float, last_probe_s: float, share: float, min_every: int) -> bool:
    """Whether to probe now, ``steps_since`` optimiser steps and ``train_s_since`` seconds after the last probe.

    True once at least ``min_every`` steps and :func:`probe_wait_s` seconds
    have passed. The estimate of the next probe's cost is the last one's.
    """
    return steps_since >= max(int(min_every), 1) and train_s_since >= probe_wait_s(last_probe_s, share)
