"""The nested label-fraction subsets of the train split.

The train/test split itself is :mod:`medssl.splits` (shared with the
pretraining data that keeps out of the test split).

Label fractions: the train cases are put in one seeded order, and a fraction
``f`` labels the first ``max(min_labels, ceil(f * N_train))`` of that order,
so the subsets of one seed are nested (5 % within 10 % within ... 100 %) and
a seed changes which cases are labelled. For class labels the order is
stratified: the seeded permutation of each class is interleaved round-robin,
so even a small prefix covers as many classes as it can.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np


def labelled_order(n: int, seed: int, labels: Optional[Sequence[int]] = None) -> np.ndarray:
    """A seeded order of ``range(n)``; stratified round-robin over classes when ``labels`` is given."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return rng.permutation(n)
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} cases")
    classes = rng.permutation(np.unique(y))
    queues: Dict[int, List[int]] = {int(c): list(rng.permutation(np.nonzero(y == c)[0])) for c in classes}
    order: List[int] = []
    while len(order) < n:
        for c in classes:
            q = queues[int(c)]
            if q:
                order.append(int(q.pop(0)))
    return np.asarray(order, dtype=np.int64)


def n_labelled(n: int, fraction: float, min_labels: int = 2) -> int:
    """``max(min_labels, ceil(fraction * n))``, capped at ``n``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction: must lie in (0, 1], got {fraction}")
    return int(min(n, max(min_labels, math.ceil(fraction * n - 1e-9))))


def label_subset(
    n: int, fraction: float, seed: int, labels: Optional[Sequence[int]] = None, min_labels: int = 2
) -> np.ndarray:
    """Indices into the train split that carry labels at ``fraction`` for ``seed`` (nested in the fraction)."""
    return labelled_order(n, seed, labels)[: n_labelled(n, fraction, min_labels)]
