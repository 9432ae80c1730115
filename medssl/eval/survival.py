"""Survival evaluation: a penalised Cox model on PCA-reduced features, scored by the C-index.

- Harrell's concordance index (Harrell et al., "Evaluating the yield of
  medical tests", JAMA 1982): among comparable pairs (the shorter time is an
  observed event, or an event and a censoring share one time: the event
  counts as first), the share where the higher risk belongs to the earlier
  event; risk ties count one half, pairs of events at one time are not
  comparable. Computed with lifelines.
- Cox proportional hazards (Cox 1972) with an L2 penalty (lifelines
  ``CoxPHFitter(penalizer=...)``), fitted on the first principal components
  of the train features (PCA fitted on the train split only), as in the
  survival probes of self-supervised CT papers that reduce features before
  a Cox head.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C of ``risk`` (higher = earlier event) for ``time`` ``[N]`` and ``event`` ``[N]`` (1 = observed)."""
    from lifelines.utils import concordance_index as _ci

    t = np.asarray(time, dtype=np.float64).reshape(-1)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    e = np.asarray(event).astype(bool).reshape(-1)
    if not (len(t) == len(r) == len(e)):
        raise ValueError(f"time/risk/event: lengths differ ({len(t)}, {len(r)}, {len(e)})")
    if not np.isfinite(r).all():
        raise ValueError("risk: contains NaN or Inf")
    try:
        # lifelines scores survival times: a high score means a long life, hence -risk
        return float(_ci(t, -r, e))
    except ZeroDivisionError:  # no comparable pair
        return float("nan")


@dataclass
class CoxProbe:
    """PCA (train split only) -> standardise -> penalised Cox model.

    Args:
        n_components: principal components kept (capped by samples - 1 and features).
        penalizer: L2 penalty of lifelines' ``CoxPHFitter``.
    """

    n_components: int = 8
    penalizer: float = 0.1

    def fit(self, features: np.ndarray, time: np.ndarray, event: np.ndarray) -> "CoxProbe":
        """``features`` ``[N, D]``, ``time`` ``[N]`` (> 0), ``event`` ``[N]`` in {0, 1}."""
        import pandas as pd
        from lifelines import CoxPHFitter

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features: expected [N, D], got shape {x.shape}")
        if len(x) < 3:
            raise ValueError(f"features: a Cox model needs at least 3 samples, got {len(x)}")
        e = np.asarray(event).astype(int).reshape(-1)
        if e.sum() == 0:
            raise ValueError("event: no observed event in the training samples")
        self.mean_ = x.mean(axis=0)
        xc = x - self.mean_
        k = int(max(1, min(self.n_components, len(x) - 1, x.shape[1])))
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        self.components_ = vt[:k]  # [k, D]
        z = xc @ self.components_.T
        self.z_mean_, self.z_std_ = z.mean(axis=0), z.std(axis=0) + 1e-8
        z = (z - self.z_mean_) / self.z_std_
        df = pd.DataFrame(z, columns=[f"pc{i}" for i in range(k)])
        df["time"] = np.asarray(time, dtype=np.float64).reshape(-1)
        df["event"] = e
        self.model_ = CoxPHFitter(penalizer=self.penalizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_.fit(df, duration_col="time", event_col="event")
        return self

    def risk(self, features: np.ndarray) -> np.ndarray:
        """``[M]`` log partial hazards (higher = earlier expected event)."""
        import pandas as pd

        z = (np.asarray(features, dtype=np.float64) - self.mean_) @ self.components_.T
        z = (z - self.z_mean_) / self.z_std_
        df = pd.DataFrame(z, columns=[f"pc{i}" for i in range(z.shape[1])])
        return np.asarray(self.model_.predict_log_partial_hazard(df), dtype=np.float64).reshape(-1)


def survival_probe(
    train_features: np.ndarray,
    train_time: np.ndarray,
    train_event: np.ndarray,
    test_features: np.ndarray,
    test_time: np.ndarray,
    test_event: np.ndarray,
    *,
    n_components: int = 8,
    penalizer: float = 0.1,
    train_subset: Optional[np.ndarray] = None,
) -> float:
    """Test C-index of a :class:`CoxProbe` fitted on (a subset of) the train features."""
    idx = np.arange(len(train_features)) if train_subset is None else np.asarray(train_subset)
    probe = CoxProbe(n_components=n_components, penalizer=penalizer).fit(
        np.asarray(train_features)[idx], np.asarray(train_time)[idx], np.asarray(train_event)[idx]
    )
    return concordance_index(test_time, probe.risk(test_features), test_event)
