"""The trainer's online kNN probe: wall-clock share, batched features, metrics, curves.png, summary, progress bar."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
from torch import nn

from medssl.errors import ConfigError
from medssl.train import knn_probe as kp
from medssl.train.logging import RunLogger, write_curves
from medssl.train.trainer import fit

from train.toy import ToySource, toy_config


def knn_rows(run):
    with open(run / "knn.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# -- the schedule (pure functions) ---------------------------------------------------------


def simulate(n_steps, step_s, probe_cost, *, share, min_every):
    """Run the trainer's probe rule on a fake clock; returns (probe steps, probe seconds, total seconds)."""
    clock, probe_total, probes = 0.0, 0.0, []
    last_step, last_cost, t_end = None, 0.0, 0.0
    for step in range(n_steps):
        if last_step is None or kp.probe_due(steps_since=step - last_step, train_s_since=clock - t_end,
                                             last_probe_s=last_cost, share=share, min_every=min_every):
            cost = probe_cost(len(probes))
            clock += cost
            probe_total += cost
            probes.append(step)
            last_step, last_cost, t_end = step, cost, clock
        clock += step_s(step)
    return probes, probe_total, clock


def test_wait_pays_for_the_probe():
    assert kp.probe_wait_s(1.0, 0.05) == pytest.approx(19.0)  # 1 s of probe per 20 s of wall-clock
    assert kp.probe_wait_s(2.0, 0.5) == pytest.approx(2.0)
    assert kp.probe_wait_s(3.0, 1.0) == 0.0
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share"):
            kp.probe_wait_s(1.0, bad)
    assert not kp.probe_due(steps_since=4, train_s_since=100.0, last_probe_s=0.0, share=0.05, min_every=5)
    assert kp.probe_due(steps_since=5, train_s_since=19.0, last_probe_s=1.0, share=0.05, min_every=5)
    assert not kp.probe_due(steps_since=500, train_s_since=18.9, last_probe_s=1.0, share=0.05, min_every=5)


def test_slow_probe_is_limited_by_the_share():
    # a 1-s probe, 0.05-s steps, 5 %: 19 s (380 steps) of training after each probe
    probes, p_s, total = simulate(2000, lambda s: 0.05, lambda i: 1.0, share=0.05, min_every=1)
    assert len(probes) == 6 and all(380 <= b - a <= 381 for a, b in zip(probes, probes[1:]))  # 381: float sums of 0.05
    assert p_s <= 0.05 * total + 1.0  # the last probe is followed by 96 steps only
    # exact binary fractions: a 1-s probe at 20 % waits 4 s = 64 steps of 1/16 s; 640 steps pay for 10 probes exactly
    probes, p_s, total = simulate(640, lambda s: 0.0625, lambda i: 1.0, share=0.2, min_every=1)
    assert probes == list(range(0, 640, 64)) and p_s / total == 0.2
    # knn_every is the minimum interval: a cheap probe runs every 50 steps, not every step
    probes, p_s, total = simulate(1000, lambda s: 0.05, lambda i: 1e-4, share=0.05, min_every=50)
    assert probes == list(range(0, 1000, 50))
    # a probe as slow as 100 steps is run 20x less often than knn_every=1 would ask
    probes, _, _ = simulate(4000, lambda s: 0.01, lambda i: 1.0, share=0.05, min_every=1)
    assert len(probes) == 3


def test_share_bounded_with_varying_costs_and_steps():
    rng = random.Random(0)
    costs = [rng.uniform(0.05, 3.0) for _ in range(1000)]
    steps = [rng.uniform(0.005, 0.2) for _ in range(20000)]
    for share in (0.02, 0.05, 0.2):
        probes, p_s, total = simulate(20000, lambda s: steps[s], lambda i: costs[i], share=share, min_every=3)
        assert len(probes) > 5
        assert p_s <= share * total + max(costs)  # every probe but the last is paid for by the training after it
        assert all(b - a >= 3 for a, b in zip(probes, probes[1:]))


# -- features and metrics ------------------------------------------------------------------


class _ConvEncoder(nn.Module):
    """Batch norm and dropout: eval mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Dropout(0.5),
                                 nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 6))

    def forward(self, x):
        return self.net(x)


def test_batched_features_equal_per_case_features():
    torch.manual_seed(0)
    enc = _ConvEncoder()
    images = torch.randn(7, 1, 6, 6, 6).half()  # sources hand over float16
    enc.train()
    enc(images.float())  # running statistics move away from their initial values
    feats = kp.probe_features(enc, images, chunk=3)
    assert enc.training  # mode restored
    assert feats.shape == (7, 6) and feats.dtype == torch.float32 and not feats.requires_grad
    enc.eval()
    with torch.no_grad():
        single = torch.cat([enc(images[i : i + 1].float()) for i in range(7)])
    torch.testing.assert_close(feats, single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kp.probe_features(enc, images, chunk=7), single, rtol=1e-5, atol=1e-6)


class _Listed(torch.utils.data.Dataset):
    """Items ``image [1, 2]``, ``id``, ``meta[key]``; two items per case (the probe keeps the first)."""

    def __init__(self, images, labels, key="severity"):
        self.items = []
        for i, (x, y) in enumerate(zip(images, labels)):
            for rep in range(2):
                self.items.append({"image": torch.as_tensor(x, dtype=torch.float32) + rep, "id": f"c{i}", "meta": {key: y}})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_majority_share_and_classification_metrics():
    assert kp.majority_share(torch.tensor([0, 0, 1, 2, 0])) == pytest.approx(0.6)
    labels = ["a"] * 6 + ["b"] * 2
    images = [[1.0, 0.1 * i] if y == "a" else [-1.0, 0.1 * i] for i, y in enumerate(labels)]
    probe = kp.collect_probe_set(_Listed(images, labels), label_key="severity", max_cases=32)
    assert probe["task"] == "classification" and probe["classes"] == ["a", "b"] and len(probe["ids"]) == 8
    torch.testing.assert_close(probe["images"], torch.tensor(images))  # the first item of each case
    got = kp.knn_scores_of(probe["images"].flatten(1), probe, k=3)
    assert got["knn_majority"] == pytest.approx(0.75) and got["knn_acc"] == pytest.approx(1.0) and got["knn_cases"] == 8
    assert kp.collect_probe_set(_Listed(images[:3], labels[:3]), label_key="severity") is None  # < 4 cases
    assert kp.collect_probe_set(_Listed(images, labels), label_key="severity", max_cases=5)["labels"].numel() == 5


def test_continuous_label_gives_spearman():
    from scipy.stats import spearmanr

    a = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 0.5])
    b = torch.tensor([1.0, 0.0, 2.0, 2.0, 9.0, 1.0])
    assert kp.spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic)
    values = [0.3 * i + 0.01 for i in range(12)]
    images = [[1.0, v] for v in values]  # the direction of the feature encodes the value
    probe = kp.collect_probe_set(_Listed(images, values, key="emphysema_pct"), label_key="emphysema_pct")
    assert probe["task"] == "regression"
    got = kp.knn_scores_of(probe["images"].flatten(1), probe, k=2, temperature=0.01)
    assert set(got) == {"knn_spearman", "knn_cases"} and got["knn_spearman"] > 0.9
    ints = kp.collect_probe_set(_Listed(images, [i % 3 for i in range(12)]), label_key="severity")
    assert ints["task"] == "classification"  # integer values are classes


# -- the trainer -----------------------------------------------------------------------


class _FloatLabelled(ToySource):
    """ToySource with a continuous ``emphysema_pct`` (the default probe label) in meta."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["meta"] = {"emphysema_pct": float(self.labels[i]) * 10.0 + 0.1 * i}
        return item


def test_fit_probes_at_start_and_end_writes_curves_and_probe_s(tmp_path):
    run = tmp_path / "r"
    summary = fit(toy_config(run, **{"trainer.max_steps": 10, "eval.knn_every": 4, "eval.knn_label": "severity",
                                     "eval.probe_share": 1.0}), resume=False)
    rows = knn_rows(run)
    assert list(rows[0]) == ["step", "knn_acc", "knn_majority", "knn_cases", "probe_s"]
    assert [int(r["step"]) for r in rows] == [0, 4, 8, 10]  # before the first step, every 4 (share 1: no wait), at the end
    assert all(float(r["knn_majority"]) == 0.5 and float(r["knn_cases"]) == 24 for r in rows)  # ToySource: alternating classes
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["probes"] == 4 and on_disk["probe_s"] >= sum(float(r["probe_s"]) for r in rows) > 0
    assert on_disk["probe_share"] == pytest.approx(on_disk["probe_s"] / on_disk["wall_clock_s"])
    assert on_disk["probe_label"] == "severity" and on_disk["final_knn_acc"] == float(rows[-1]["knn_acc"])
    assert summary["probe_s"] == on_disk["probe_s"]
    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run.glob(".tmp-*"))


def test_fit_without_probe_still_plots_and_reports_zero(tmp_path):
    summary = fit(toy_config(tmp_path / "n", **{"trainer.max_steps": 3}), resume=False)
    assert summary["probe_s"] == 0.0 and summary["probes"] == 0
    assert (tmp_path / "n" / "curves.png").is_file() and not (tmp_path / "n" / "knn.csv").exists()


def test_fit_default_label_continuous_spearman(tmp_path):
    run = tmp_path / "s"
    fit(toy_config(run, **{"trainer.max_steps": 4, "eval.knn_every": 100}), source=_FloatLabelled(), resume=False)
    rows = knn_rows(run)
    assert list(rows[0]) == ["step", "knn_spearman", "knn_cases", "probe_s"] and [int(r["step"]) for r in rows] == [0, 4]
    assert -1.0 <= float(rows[-1]["knn_spearman"]) <= 1.0


def test_fit_slow_probe_takes_its_share(tmp_path, monkeypatch):
    import time

    from medssl.train import trainer

    def slow_probe(encoder, probe, **kw):
        time.sleep(0.05)
        return {"knn_acc": 0.5, "knn_majority": 0.5, "knn_cases": 24.0}

    monkeypatch.setattr(trainer, "knn_probe", slow_probe)
    run = tmp_path / "slow"
    summary = fit(toy_config(run, **{"trainer.max_steps": 40, "eval.knn_every": 1, "eval.knn_label": "severity",
                                     "eval.probe_share": 0.1, "trainer.checkpoint_every": 100}), resume=False)
    n = summary["probes"]
    # every probe but the final one is followed by >= 0.45 s of training; knn_every=1 alone would probe 41 times
    train_s = summary["wall_clock_s"] - summary["probe_s"]
    assert 2 <= n <= 2 + train_s / 0.45
    assert n == len(knn_rows(run))


def test_resume_continues_probe_log_and_time(tmp_path, monkeypatch):
    import time

    from medssl.train import trainer

    probe = trainer.knn_probe

    def timed_probe(encoder, probe_set, **kw):  # every probe takes at least 0.05 s, whatever the machine's load
        time.sleep(0.05)
        return probe(encoder, probe_set, **kw)

    monkeypatch.setattr(trainer, "knn_probe", timed_probe)
    run = tmp_path / "res"
    kw = {"eval.knn_every": 2, "eval.knn_label": "severity", "eval.probe_share": 1.0, "trainer.checkpoint_every": 3}
    first = fit(toy_config(run, **kw, **{"trainer.max_steps": 6}), resume=False)
    second = fit(toy_config(run, **kw, **{"trainer.max_steps": 9}))
    steps = [int(r["step"]) for r in knn_rows(run)]
    assert steps == [0, 2, 4, 6, 8, 9]  # the end-of-run probe at 6 was redone by the resumed run
    assert first["probes"] == 4 and second["probes"] == len(steps)
    # the resumed total carries the first run's probes at 0, 2 and 4: six probes of >= 0.05 s, where the
    # resumed run's own three would give 0.15 s
    assert first["probe_s"] >= 4 * 0.05 and second["probe_s"] >= 6 * 0.05


def test_probe_settings_are_checked(tmp_path):
    for key, val in (("eval.probe_share", 0.0), ("eval.probe_share", 1.5), ("eval.knn_max_cases", 2), ("eval.probe_chunk", 0), ("eval.knn_every", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            fit(toy_config(tmp_path / "bad", **{key: val}), resume=False)


def test_curves_failure_is_a_warning(tmp_path, monkeypatch):
    import matplotlib.figure

    fit(toy_config(tmp_path / "c", **{"trainer.max_steps": 2}), resume=False)

    def broken(*a, **k):
        raise RuntimeError("no backend")

    monkeypatch.setattr(matplotlib.figure, "Figure", broken)
    with pytest.warns(UserWarning, match="curves.png: not written"):
        assert write_curves(tmp_path / "c") is None


# -- the progress bar ----------------------------------------------------------------------


def test_progress_bar_counts_budget_seconds(tmp_path):
    log = RunLogger(tmp_path / "p", start_step=0, max_steps=100000, tensorboard=False, progress_bar=True, time_budget_s=420.0)
    assert log.bar.total == 420.0 and log.unit == "s"
    for done in range(1, 6):
        log.progress(done, 2.0 * done, loss=1.5)
    assert log.unit == "s" and log.bar.n == pytest.approx(10.0)
    assert "step=5" in log.bar.postfix and "loss=1.5" in log.bar.postfix
    log.progress(6, 500.0)
    assert log.bar.n == pytest.approx(420.0)  # never past the budget
    log.close()
    # a budget that max_steps beats: back to steps once the rate is known
    log = RunLogger(tmp_path / "q", start_step=0, max_steps=10, tensorboard=False, progress_bar=True, time_budget_s=420.0)
    for done in range(1, 4):
        log.progress(done, 0.1 * done)
    assert log.unit == "step" and log.bar.total == 10 and log.bar.n == 3
    log.close()
    log = RunLogger(tmp_path / "r", start_step=2, max_steps=10, tensorboard=False, progress_bar=True)
    log.progress(3, 1.0, loss=2.0, lr=0.1)
    assert log.unit == "step" and log.bar.total == 10 and log.bar.n == 3
    log.close()
