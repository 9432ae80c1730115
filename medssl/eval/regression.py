"""Regression metrics for frozen-feature probes of continuous targets (emphysema %, lung function).

MAE, RMSE, the coefficient of determination R^2 = 1 - SS_res / SS_tot, and
Pearson and Spearman correlations between prediction and target.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from scipy.stats import pearsonr, spearmanr


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> Dict[str, float]:
    """``{"mae", "rmse", "r2", "pearson", "spearman"}`` for ``[N]`` targets and predictions."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"y_pred: {p.shape[0]} predictions for {y.shape[0]} targets")
    if len(y) == 0:
        raise ValueError("y_true: no samples")
    res = y - p
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    out = {
        "mae": float(np.mean(np.abs(res))),
        "rmse": float(np.sqrt(np.mean(res**2))),
        "r2": 1.0 - float(np.sum(res**2)) / ss_tot if ss_tot > 0 else float("nan"),
    }
    const = np.ptp(y) == 0 or np.ptp(p) == 0 or len(y) < 2
    out["pearson"] = float("nan") if const else float(pearsonr(y, p)[0])
    out["spearman"] = float("nan") if const else float(spearmanr(y, p)[0])
    return out
