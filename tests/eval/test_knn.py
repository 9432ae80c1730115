"""Cosine kNN (DINO votes) against a plain loop re-derivation and on an easy signal."""

import math

import numpy as np
import pytest
import torch

from medssl.knn import KNNClassifier, knn_accuracy, knn_predict, knn_regress, knn_scores


def _slow_knn(xtr, ytr, xte, k, T, C):
    out = np.zeros((len(xte), C))
    for i, q in enumerate(xte):
        sims = [float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x))) for x in xtr]
        order = sorted(range(len(xtr)), key=lambda j: -sims[j])[:k]
        for j in order:
            out[i, ytr[j]] += math.exp(sims[j] / T)
        out[i] /= out[i].sum()
    return out


def test_knn_scores_match_loop():
    rng = np.random.default_rng(0)
    xtr, xte = rng.normal(size=(40, 6)), rng.normal(size=(9, 6))
    ytr = rng.integers(0, 3, size=40)
    got = knn_scores(xtr, ytr, xte, k=7, temperature=0.1, num_classes=4, chunk_size=4).numpy()
    want = _slow_knn(xtr, ytr, xte, 7, 0.1, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.shape == (9, 4) and np.all(got[:, 3] == 0)


def test_knn_recovers_clusters():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16)) * 3
    y = rng.integers(0, 3, size=120)
    x = centres[y] + rng.normal(size=(120, 16))
    acc = knn_accuracy(torch.tensor(x[:90]), torch.tensor(y[:90]), x[90:], y[90:], k=10)
    assert acc > 0.9
    # shuffled labels: chance level
    acc_shuf = knn_accuracy(x[:90], rng.permutation(y[:90]), x[90:], y[90:], k=10)
    assert acc_shuf < 0.7
    clf = KNNClassifier(k=10).fit(x[:90], y[:90])
    assert (clf.predict(x[90:]) == knn_predict(x[:90], y[:90], x[90:], k=10).numpy()).all()


def test_knn_regress_weighted_mean():
    xtr = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ytr = np.array([1.0, 3.0, 10.0])
    q = np.array([[1.0, 0.2]])
    T = 0.5
    s = xtr @ q[0] / (np.linalg.norm(xtr, axis=1) * np.linalg.norm(q[0]))
    top = np.argsort(-s)[:2]
    w = np.exp(s[top] / T)
    want = (w * ytr[top]).sum() / w.sum()
    got = knn_regress(xtr, ytr, q, k=2, temperature=T)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kw", [{"k": 0}, {"temperature": 0.0}])
def test_knn_bad_args(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        knn_scores(np.ones((3, 2)), np.zeros(3, dtype=int), np.ones((1, 2)), **kw)
