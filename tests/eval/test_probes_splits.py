"""Linear probes recover an easy signal; splits and label subsets are fixed, nested and seeded."""

import numpy as np
import pytest

from medssl.eval.linear_probe import LinearProbeClassifier, RidgeProbe
from medssl.eval.metrics import roc_auc
from medssl.eval.splits import label_subset, n_labelled
from medssl.splits import train_test_split


def test_logistic_probe_recovers_signal_and_picks_c_on_train():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 20))
    x[:, :3] += 2.5 * np.eye(3)[y]
    probe = LinearProbeClassifier().fit(x[:60], y[:60], num_classes=4)
    p = probe.predict_proba(x[60:])
    assert p.shape == (30, 4) and np.allclose(p.sum(1), 1)
    assert (probe.predict(x[60:]) == y[60:]).mean() > 0.8
    assert roc_auc(y[60:], p[:, :3]) > 0.9
    assert set(probe.cv_scores_) == set(probe.c_grid) and probe.c_ in probe.c_grid
    # one class only: predicts it
    one = LinearProbeClassifier().fit(x[:3], np.array([2, 2, 2]), num_classes=4)
    assert (one.predict(x[60:]) == 2).all()


def test_ridge_probe_recovers_linear_target():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 10))
    t = x @ rng.normal(size=10) + 0.1 * rng.normal(size=80)
    pr = RidgeProbe().fit(x[:60], t[:60])
    err = np.mean((pr.predict(x[60:]) - t[60:]) ** 2)
    assert err < 0.1 * np.var(t[60:])
    assert pr.alpha_ in pr.alpha_grid


def test_split_rule_is_fixed_and_disjoint():
    ids = [f"case_{i:03d}" for i in range(64)]
    tr, te = train_test_split(ids)
    assert len(tr) == 48 and len(te) == 16 and not set(tr) & set(te)
    tr2, te2 = train_test_split(list(reversed(ids)))
    assert tr2 == tr and te2 == te  # independent of input order
    tr3, te3 = train_test_split(ids, rule="sorted")
    assert te3 == ids[48:]
    with pytest.raises(ValueError, match="split_rule"):
        train_test_split(ids, rule="random")


def test_label_subsets_nested_deterministic_and_seeded():
    y = np.array([0] * 30 + [1] * 12 + [2] * 6)
    fracs = [0.05, 0.1, 0.25, 0.5, 1.0]
    for seed in range(3):
        subs = [label_subset(48, f, seed, labels=y) for f in fracs]
        for small, big in zip(subs, subs[1:]):
            assert set(small) <= set(big)
        assert len(subs[1]) == n_labelled(48, 0.1) == 5
        assert sorted(subs[-1]) == list(range(48))
        assert len(set(y[subs[0]])) == min(3, len(subs[0]))  # stratified prefix
        np.testing.assert_array_equal(subs[1], label_subset(48, 0.1, seed, labels=y))
    assert set(label_subset(48, 0.25, 0)) != set(label_subset(48, 0.25, 1))
    with pytest.raises(ValueError, match="label_fraction"):
        label_subset(48, 0.0, 0)


def test_split_keeps_each_patient_on_one_side():
    cts = [f"p{i:02d}" for i in range(20)]
    xrays = [f"{p}_{v}" for p in cts for v in ("pa", "lateral")]
    groups = [x.rsplit("_", 1)[0] for x in xrays]
    tr, te = train_test_split(xrays, groups=groups)
    ct_tr, ct_te = train_test_split(cts)
    assert len(tr) == 30 and len(te) == 10
    # an X-ray is on the side of its CT, and both views of a patient are together
    assert {x.rsplit("_", 1)[0] for x in tr} == set(ct_tr)
    assert {x.rsplit("_", 1)[0] for x in te} == set(ct_te)
    # ungrouped cases still split as before
    assert train_test_split(cts, groups=[None] * len(cts)) == (ct_tr, ct_te)
