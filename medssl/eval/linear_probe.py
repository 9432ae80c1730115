"""Linear probes on frozen features: logistic regression and ridge regression.

The regularisation strength is picked by k-fold cross-validation on the
training samples only (the test patients never choose a hyperparameter), as
in the linear evaluation protocol of SimCLR (Chen et al., ICML 2020,
appendix B.5), which tunes the L2 penalty on a held-out part of the train
split. Features are standardised with train statistics first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
ALPHA_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _check_xy(x: np.ndarray, y: np.ndarray, name: str = "features") -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}: expected [N, D], got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} samples for {len(y)} targets")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf")


@dataclass
class LinearProbeClassifier:
    """Multinomial logistic regression with ``C`` chosen by stratified CV on the train split.

    With fewer than two samples per class for CV, ``default_c`` is used; with
    a single class in the training samples the probe predicts that class.
    """

    c_grid: Sequence[float] = C_GRID
    default_c: float = 1.0
    max_folds: int = 5
    seed: int = 0
    cv_scores_: Dict[float, float] = field(default_factory=dict, init=False)

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: Optional[int] = None) -> "LinearProbeClassifier":
        """``features`` ``[N, D]``, ``labels`` ``[N]`` integers in ``[0, num_classes)``."""
        from sklearn.model_selection import StratifiedKFold

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        _check_xy(x, y)
        self.num_classes_ = int(num_classes) if num_classes is not None else int(y.max()) + 1
        self.mu_, self.sd_ = x.mean(axis=0), x.std(axis=0) + 1e-8
        xs = (x - self.mu_) / self.sd_
        self.classes_ = np.unique(y)
        self.model_ = None
        if len(self.classes_) < 2:
            return self
        counts = np.bincount(y)[self.classes_]
        folds = int(min(self.max_folds, counts.min()))
        best_c = self.default_c
        self.cv_scores_ = {}
        if folds >= 2:
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for c in self.c_grid:
                losses = []
                for tr, va in skf.split(xs, y):
                    m = self._model(c).fit(xs[tr], y[tr])
                    p = np.clip(self._proba_of(m, xs[va]), 1e-12, 1.0)
                    losses.append(-np.mean(np.log(p[np.arange(len(va)), y[va]])))
                self.cv_scores_[c] = float(np.mean(losses))
            best_c = min(self.cv_scores_, key=self.cv_scores_.get)
        self.c_ = best_c
        self.model_ = self._model(best_c).fit(xs, y)
        return self

    def _model(self, c: float):
        from sklearn.linear_model import LogisticRegression

        return _Quiet(LogisticRegression(C=c, max_iter=2000))

    def _proba_of(self, model, xs: np.ndarray) -> np.ndarray:
        p = np.zeros((len(xs), self.num_classes_))
        p[:, model.classes_] = model.predict_proba(xs)
        return p

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``[M, num_classes]`` class probabilities."""
        xs = (np.asarray(features, dtype=np.float64) - self.mu_) / self.sd_
        if self.model_ is None:
            p = np.zeros((len(xs), self.num_classes_))
            p[:, self.classes_[0]] = 1.0
            return p
        return self._proba_of(self.model_, xs)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_proba(features).argmax(axis=1)


class _Quiet:
    """Wraps an estimator so that convergence warnings on tiny folds stay out of the logs."""

    def __init__(self, est) -> None:
        self.est = est

    def fit(self, x, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.est.fit(x, y)
        return self

    @property
    def classes_(self):
        return self.est.classes_

    def predict_proba(self, x):
        return self.est.predict_proba(x)


@dataclass
class RidgeProbe:
    """Ridge regression with ``alpha`` chosen by k-fold CV (mean squared error) on the train split."""

    alpha_grid: Sequence[float] = ALPHA_GRID
    max_folds: int = 5
    seed: int = 0

    def fit(self, features: np.ndarray, targets: np.ndarray) -> "RidgeProbe":
        """``features`` ``[N, D]``, ``targets`` ``[N]`` floats."""
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import KFold

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        _check_xy(x, y)
        if len(x) < 2:
            raise ValueError(f"features: a ridge probe needs at least 2 samples, got {len(x)}")
        self.mu_, self.sd_ = x.mean(axis=0), x.std(axis=0) + 1e-8
        xs = (x - self.mu_) / self.sd_
        folds = int(min(self.max_folds, len(x)))
        self.cv_scores_: Dict[float, float] = {}
        if folds >= 2:
            kf = KFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for a in self.alpha_grid:
                errs = [
                    np.mean((Ridge(alpha=a).fit(xs[tr], y[tr]).predict(xs[va]) - y[va]) ** 2)
                    for tr, va in kf.split(xs)
                ]
                self.cv_scores_[a] = float(np.mean(errs))
        self.alpha_ = min(self.cv_scores_, key=self.cv_scores_.get) if self.cv_scores_ else 1.0
        self.model_ = Ridge(alpha=self.alpha_).fit(xs, y)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[M]`` predictions."""
        xs = (np.asarray(features, dtype=np.float64) - self.mu_) / self.sd_
        return self.model_.predict(xs)
