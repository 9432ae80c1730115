"""Classification metrics, bootstrap intervals, C-index and recall@k against plain re-derivations."""

import itertools

import numpy as np
import pytest

from medssl.eval.metrics import accuracy, average_precision, bootstrap_ci, classification_report, roc_auc
from medssl.eval.regression import regression_report
from medssl.eval.retrieval import bidirectional_recall, recall_at_k
from medssl.eval.survival import CoxProbe, concordance_index, survival_probe


def _pair_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50) + y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(_pair_auc(y, s))
    # macro one-vs-rest
    y3 = rng.integers(0, 3, 60)
    s3 = rng.normal(size=(60, 3)) + np.eye(3)[y3]
    want = np.mean([_pair_auc((y3 == c).astype(int), s3[:, c]) for c in range(3)])
    assert roc_auc(y3, s3) == pytest.approx(want)


def test_ap_and_accuracy_reference_values():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.random(40), 1)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    # hand-worked: scores .9(+) .8(-) .7(+) -> AP = 1*1/2 + 2/3*1/2
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    assert accuracy([0, 1, 2], np.eye(3)[[0, 2, 2]]) == pytest.approx(2 / 3)


def test_bootstrap_ci_contains_point_and_is_seeded():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    s = rng.normal(size=80) + 1.2 * y
    p, lo, hi = bootstrap_ci(roc_auc, y, s, n_boot=300, seed=5)
    assert lo <= p <= hi and hi - lo > 0.02
    assert bootstrap_ci(roc_auc, y, s, n_boot=300, seed=5) == (p, lo, hi)
    assert bootstrap_ci(roc_auc, y, s, n_boot=300, seed=6) != (p, lo, hi)
    rep = classification_report(y, np.stack([-s, s], 1), n_boot=100)
    for m in ("auc", "accuracy", "ap"):
        assert rep[f"{m}_lo"] <= rep[m] <= rep[f"{m}_hi"]


def _slow_cindex(t, r, e):
    num = den = 0.0
    for i, j in itertools.permutations(range(len(t)), 2):
        # comparable: i failed first, or i failed when j was censored at the same time
        if e[i] and (t[i] < t[j] or (t[i] == t[j] and not e[j])):
            den += 1
            num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    return num / den


def test_cindex_matches_quadratic_rederivation():
    rng = np.random.default_rng(3)
    t = rng.integers(1, 30, 60).astype(float)  # ties in time
    e = rng.random(60) < 0.7
    r = np.round(-0.1 * t + rng.normal(size=60), 1)  # ties in risk
    assert concordance_index(t, r, e) == pytest.approx(_slow_cindex(t, r, e))
    assert concordance_index([1, 2, 3], [3, 2, 1], [1, 1, 1]) == 1.0


def test_cox_probe_finds_a_risk_direction():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 6))
    t = rng.exponential(1 / np.exp(2.5 * x[:, 0]))
    e = rng.random(200) < 0.8
    oracle = concordance_index(t[120:], x[120:, 0], e[120:])
    c = survival_probe(x[:120], t[:120], e[:120], x[120:], t[120:], e[120:], n_components=6)
    assert c > 0.75 and c > oracle - 0.05
    c_null = survival_probe(x[:120], rng.permutation(t[:120]), e[:120], x[120:], t[120:], e[120:], n_components=6)
    assert c_null < 0.6
    with pytest.raises(ValueError, match="event"):
        CoxProbe().fit(x[:5], t[:5], np.zeros(5))


def _slow_recall(q, g, k):
    hits = 0
    for i in range(len(q)):
        sims = [np.dot(q[i], g[j]) / np.linalg.norm(q[i]) / np.linalg.norm(g[j]) for j in range(len(g))]
        rank = sum(1 for j in range(len(g)) if sims[j] >= sims[i])
        hits += rank <= k
    return hits / len(q)


def test_recall_at_k_matches_brute_force():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 8))
    b = a + 1.5 * rng.normal(size=(30, 8))
    got = recall_at_k(a, b, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[f"R@{k}"] == pytest.approx(_slow_recall(a, b, k))
    assert recall_at_k(a, a)["R@1"] == 1.0
    assert recall_at_k(np.ones((10, 3)), np.ones((10, 3)), ks=(1,))["R@1"] == 0.0  # ties do not win
    both = bidirectional_recall(a, b)
    assert both["b2a_R@5"] == pytest.approx(_slow_recall(b, a, 5))


def test_regression_report():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 4.0])
    r = regression_report(y, p)
    assert r["mae"] == pytest.approx(0.25)
    assert r["r2"] == pytest.approx(1 - 0.5 / 5.0)
    assert r["spearman"] == pytest.approx(1.0)
