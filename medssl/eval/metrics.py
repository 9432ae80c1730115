"""Classification metrics and seeded bootstrap confidence intervals.

- AUC: the Mann-Whitney form of the area under the ROC curve (ties count one
  half); multi-class AUC is the macro mean of one-vs-rest AUCs over the
  classes present in ``y_true`` with at least one negative (Hand & Till 2001
  discuss the alternatives; one-vs-rest macro is what most papers report).
- Average precision: step-wise area under the precision-recall curve
  (scikit-learn's definition), macro over classes for multi-class.
- Bootstrap: percentile intervals over test-set resamples with replacement
  (Efron & Tibshirani 1993, ch. 13), seeded; resamples where the metric is
  undefined (a single class drawn) are skipped.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
from scipy.stats import rankdata


def _scores_2d(y_score: np.ndarray) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 1:  # binary: score of the positive class
        s = np.stack([-s, s], axis=1)
    if s.ndim != 2:
        raise ValueError(f"y_score: expected [N] or [N, C], got shape {s.shape}")
    return s


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a binary problem (``y_true`` in {0, 1}); NaN when one class is absent."""
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"score: {s.shape[0]} scores for {y.shape[0]} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: ties count one half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary AUC (``y_score`` ``[N]`` or ``[N, 2]``) or macro one-vs-rest AUC (``[N, C]``)."""
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = _scores_2d(y_score)
    if s.shape[1] == 2:
        return binary_auc(y == 1, s[:, 1])
    aucs = [binary_auc(y == c, s[:, c]) for c in range(s.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def binary_average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over decreasing score thresholds; NaN without positives."""
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # thresholds at distinct scores: the last index of each run of equal scores
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary AP, or macro AP over classes present in ``y_true`` for ``[N, C]`` scores."""
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = _scores_2d(y_score)
    if s.shape[1] == 2:
        return binary_average_precision(y == 1, s[:, 1])
    aps = [binary_average_precision(y == c, s[:, c]) for c in range(s.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Top-1 accuracy of ``argmax`` over ``[N, C]`` scores (or ``score > 0.5`` for ``[N]``)."""
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64)
    pred = (s > 0.5).astype(np.int64) if s.ndim == 1 else s.argmax(axis=1)
    return float(np.mean(pred == y)) if len(y) else float("nan")


CLASSIFICATION_METRICS: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": roc_auc,
    "accuracy": accuracy,
    "ap": average_precision,
}


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """``(point, low, high)``: the metric on the full set and its ``1 - alpha`` percentile interval.

    ``y_true`` ``[N]`` and ``y_score`` ``[N]`` / ``[N, C]`` are resampled together
    ``n_boot`` times with ``numpy.random.default_rng(seed)``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    if len(y) != len(s):
        raise ValueError(f"y_score: {len(s)} scores for {len(y)} labels")
    point = float(metric(y, s))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), size=len(y))
        v = metric(y[idx], s[idx])
        if not np.isnan(v):
            vals.append(v)
    if not vals:
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def classification_report(
    y_true: np.ndarray, y_score: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> Dict[str, float]:
    """AUC, accuracy and AP with bootstrap intervals: keys ``auc``, ``auc_lo``, ``auc_hi``, ..."""
    out: Dict[str, float] = {}
    for name, fn in CLASSIFICATION_METRICS.items():
        p, lo, hi = bootstrap_ci(fn, y_true, y_score, n_boot=n_boot, seed=seed)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = p, lo, hi
    return out
