"""Cosine k-nearest-neighbour classifier with temperature-weighted votes.

The protocol of DINO (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021, sec. 4.1 and appendix): features are
L2-normalised, each test sample takes its ``k`` most cosine-similar training
samples, and neighbour ``j`` votes for its class with weight
``exp(s_j / T)`` (``T = 0.07``, ``k = 20`` in the paper). The class scores are
the summed votes, normalised here to sum to one per sample.

Used by the evaluation harness on frozen features (:mod:`medssl.eval.tasks`)
and by the trainer's online probe during pretraining
(:mod:`medssl.train.knn_probe`), so it sits below both (train never imports
eval); it needs only torch and NumPy, works on tensors on any device and on
NumPy arrays.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not torch.is_floating_point(t) and dtype.is_floating_point:
        t = t.to(dtype)
    return t.to(dtype) if dtype.is_floating_point else t.long()


def knn_scores(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of a cosine kNN vote (DINO).

    Args:
        train_features: ``[N, D]`` features of the labelled samples.
        train_labels: ``[N]`` integer class labels in ``[0, num_classes)``.
        test_features: ``[M, D]`` features to classify.
        k: neighbours per test sample (capped at ``N``).
        temperature: ``T`` in the vote weight ``exp(cos / T)``.
        num_classes: number of classes ``C`` (default: ``max(label) + 1``).
        chunk_size: test samples per similarity block (bounds memory at
            ``chunk_size x N``).

    Returns:
        ``[M, C]`` float tensor of vote shares (rows sum to one), on the
        device of ``test_features``.
    """
    xtr = _as_tensor(train_features, "train_features")
    ytr = _as_tensor(train_labels, "train_labels", dtype=torch.long).reshape(-1)
    xte = _as_tensor(test_features, "test_features").to(xtr.device)
    if xtr.ndim != 2 or xte.ndim != 2:
        raise ValueError(
            f"train_features/test_features: expected [N, D] and [M, D], got {tuple(xtr.shape)} and {tuple(xte.shape)}"
        )
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"test_features: dimension {xte.shape[1]} differs from train_features {xtr.shape[1]}")
    if ytr.shape[0] != xtr.shape[0]:
        raise ValueError(f"train_labels: {ytr.shape[0]} labels for {xtr.shape[0]} training samples")
    if xtr.shape[0] == 0:
        raise ValueError("train_features: no training samples")
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if ytr.min() < 0:
        raise ValueError("train_labels: negative class label")
    n_cls = int(num_classes) if num_classes is not None else int(ytr.max()) + 1
    if int(ytr.max()) >= n_cls:
        raise ValueError(f"num_classes: {n_cls} is too small for label {int(ytr.max())}")
    ytr = ytr.to(xtr.device)

    k_eff = min(int(k), xtr.shape[0])
    xtr_n = F.normalize(xtr, dim=1)  # [N, D]
    out = []
    for start in range(0, xte.shape[0], chunk_size):
        q = F.normalize(xte[start : start + chunk_size], dim=1)  # [m, D]
        sim = q @ xtr_n.T  # [m, N] cosine similarity
        top_sim, top_idx = sim.topk(k_eff, dim=1)  # [m, k]
        weights = (top_sim / temperature).exp()  # [m, k]
        votes = torch.zeros(q.shape[0], n_cls, device=q.device, dtype=q.dtype)
        votes.scatter_add_(1, ytr[top_idx], weights)  # [m, C]
        out.append(votes / votes.sum(dim=1, keepdim=True))
    if not out:
        return torch.zeros(0, n_cls, device=xtr.device)
    return torch.cat(out, dim=0)


def knn_predict(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
) -> torch.Tensor:
    """Predicted class ``[M]`` (long) of a cosine kNN vote; see :func:`knn_scores`."""
    return knn_scores(
        train_features, train_labels, test_features, k=k, temperature=temperature, num_classes=num_classes
    ).argmax(dim=1)


def knn_accuracy(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
) -> float:
    """Top-1 accuracy in ``[0, 1]`` of the cosine kNN vote (the online probe's number)."""
    pred = knn_predict(
        train_features, train_labels, test_features, k=k, temperature=temperature, num_classes=num_classes
    )
    yte = _as_tensor(test_labels, "test_labels", dtype=torch.long).reshape(-1).to(pred.device)
    if yte.shape[0] != pred.shape[0]:
        raise ValueError(f"test_labels: {yte.shape[0]} labels for {pred.shape[0]} test samples")
    if yte.numel() == 0:
        return float("nan")
    return float((pred == yte).float().mean())


def knn_regress(
    train_features: ArrayLike,
    train_targets: ArrayLike,
    test_features: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Cosine kNN regression: the ``exp(cos / T)``-weighted mean of the neighbours' targets.

    Returns ``[M]`` float predictions.
    """
    xtr = F.normalize(_as_tensor(train_features, "train_features"), dim=1)
    ytr = _as_tensor(train_targets, "train_targets").reshape(-1).to(xtr.device)
    xte = F.normalize(_as_tensor(test_features, "test_features").to(xtr.device), dim=1)
    if ytr.shape[0] != xtr.shape[0]:
        raise ValueError(f"train_targets: {ytr.shape[0]} targets for {xtr.shape[0]} training samples")
    if k < 1 or temperature <= 0:
        raise ValueError("k/temperature: k must be >= 1 and temperature > 0")
    top_sim, top_idx = (xte @ xtr.T).topk(min(int(k), xtr.shape[0]), dim=1)
    w = torch.softmax(top_sim / temperature, dim=1)  # [M, k], same ratios as exp(s / T)
    return (w * ytr[top_idx]).sum(dim=1)


class KNNClassifier:
    """A fit/predict wrapper around :func:`knn_scores` for the evaluation tables."""

    def __init__(self, *, k: int = 20, temperature: float = 0.07) -> None:
        self.k = k
        self.temperature = temperature

    def fit(self, features: ArrayLike, labels: ArrayLike) -> "KNNClassifier":
        self.features_ = _as_tensor(features, "features")
        self.labels_ = _as_tensor(labels, "labels", dtype=torch.long).reshape(-1)
        self.num_classes_ = int(self.labels_.max()) + 1 if self.labels_.numel() else 0
        return self

    def predict_proba(self, features: ArrayLike, num_classes: Optional[int] = None) -> np.ndarray:
        """``[M, C]`` vote shares as a NumPy array."""
        n_cls = max(self.num_classes_, int(num_classes or 0))
        s = knn_scores(
            self.features_, self.labels_, features, k=self.k, temperature=self.temperature, num_classes=n_cls
        )
        return s.cpu().numpy()

    def predict(self, features: ArrayLike) -> np.ndarray:
        return self.predict_proba(features).argmax(axis=1)
