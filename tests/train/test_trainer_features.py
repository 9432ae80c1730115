"""Trainer behaviour: NaN/Inf steps, time budget, logs and summary, data position, CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from medssl.train.data import StepBatchSampler, StepDataset, build_loader
from medssl.train.state import load_state
from medssl.train.trainer import DivergedError, fit

from train.toy import ToySource, toy_config, toy_views


def rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def params(path):
    return {k: v for k, v in load_file(str(path)).items() if k != "center"}


def test_nan_step_is_skipped_without_update(tmp_path):
    # constant lr (cosine from lr to lr), plain SGD: runs of 3 and 4 steps share steps 0..2
    s = {"method.dropout": 0.0, "schedules.warmup_steps": 0, "schedules.min_lr": 0.05, "optim.lr": 0.05, "optim.name": "sgd", "optim.momentum": 0.0}
    fit(toy_config(tmp_path / "a", **s, **{"trainer.max_steps": 3}), resume=False)
    with pytest.warns(UserWarning, match="step 3: non-finite loss"):
        fit(toy_config(tmp_path / "b", **s, **{"trainer.max_steps": 4, "method.nan_steps": "[3]"}), resume=False)
    r = rows(tmp_path / "b")
    assert math.isnan(float(r[3]["loss"])) and all(math.isfinite(float(x["loss"])) for x in r[:3])
    wa, wb = params(tmp_path / "a" / "checkpoints" / "final.safetensors"), params(tmp_path / "b" / "checkpoints" / "final.safetensors")
    assert set(wa) == set(wb) == {"encoder.fc.weight", "encoder.fc.bias", "head.1.weight", "head.1.bias"}
    for k in wa:  # the NaN step changed nothing
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0)


def test_stops_after_max_bad_steps_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_config(tmp_path / "r", **{"trainer.max_steps": 20, "trainer.checkpoint_every": 2, "trainer.max_bad_steps": 3, "method.nan_from": 5})
    with pytest.warns(UserWarning), pytest.raises(DivergedError) as err:
        fit(cfg, resume=False)
    assert "3 steps in a row" in str(err.value) and "at step 7" in str(err.value)
    state = load_state(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["samples_seen"] == 4 * 8
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    assert [int(r["step"]) for r in rows(tmp_path / "r")] == list(range(8))


def test_time_budget_stops_cleanly_and_writes_summary(tmp_path):
    summary = fit(toy_config(tmp_path / "t", **{"trainer.time_budget_s": 0.0, "trainer.max_steps": 50}), resume=False)
    assert summary["stop_reason"] == "time_budget" and summary["steps_done"] == 1
    assert load_state(tmp_path / "t" / "checkpoints" / "last.pt")["step"] == 1
    on_disk = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert on_disk["steps_done"] == 1 and on_disk["samples_seen"] == 8
    assert on_disk["parameters"] == 16 * 8 + 8 + 8 * 8 + 8
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["trainer"]["time_budget_s"] == 0.0
    assert (tmp_path / "t" / "checkpoints" / "final.safetensors").is_file()


def test_log_columns_and_schedule_in_csv(tmp_path):
    fit(toy_config(tmp_path / "l", **{"trainer.max_steps": 6, "schedules.warmup_steps": 2, "optim.lr": 0.1, "trainer.accumulate": 2}), resume=False)
    r = rows(tmp_path / "l")
    assert list(r[0]) == ["step", "loss", "lr", "weight_decay", "center_norm", "samples_per_s"]
    from medssl.train.schedules import warmup_cosine

    assert [float(x["lr"]) for x in r] == pytest.approx([warmup_cosine(s, total_steps=6, peak=0.1, warmup_steps=2) for s in range(6)])


@pytest.mark.parametrize("world,acc", [(1, 1), (2, 1), (2, 2), (1, 4)])
def test_sampler_partitions_each_global_batch(world, acc):
    G, steps = 8, 3
    seen = {s: [] for s in range(steps)}
    for r in range(world):
        batches = list(StepBatchSampler(global_batch=G, world_size=world, rank=r, accumulate=acc, max_steps=steps))
        assert len(batches) == steps * acc and all(len(b) == G // (world * acc) for b in batches)
        for j, b in enumerate(batches):
            seen[j // acc].extend(b)
    for s in range(steps):
        assert sorted(seen[s]) == list(range(s * G, (s + 1) * G))
    with pytest.raises(ValueError, match="data.batch_size"):
        StepBatchSampler(global_batch=6, world_size=4, max_steps=1)


def test_views_depend_on_sample_index_only(tmp_path):
    ds = StepDataset(ToySource(n=10), toy_views, seed=5)
    full = list(build_loader(ds, StepBatchSampler(global_batch=4, max_steps=5), num_workers=0))
    tail = list(build_loader(ds, StepBatchSampler(global_batch=4, start_step=3, max_steps=5), num_workers=2))
    for a, b in zip(full[3:], tail):
        torch.testing.assert_close(a["view0"], b["view0"])
        assert a["index"].tolist() == b["index"].tolist()
    # every epoch visits each source item once, in a seeded order
    keys = [ds.source_key(i) for i in range(20)]
    assert sorted(keys[:10]) == list(range(10)) and sorted(keys[10:]) == list(range(10)) and keys[:10] != keys[10:]


class _OrderedSource(ToySource):
    """A source that arranges its own pass order (reversed on odd passes)."""

    def epoch_order(self, epoch, seed):
        order = np.arange(len(self))
        return order[::-1] if epoch % 2 else order


def test_source_epoch_order_replaces_the_permutation():
    ds = StepDataset(_OrderedSource(n=5), toy_views, seed=5)
    assert [ds.source_key(i) for i in range(10)] == [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]

    class Bad(ToySource):
        def epoch_order(self, epoch, seed):
            return np.arange(3)

    with pytest.raises(ValueError, match="epoch_order"):
        StepDataset(Bad(n=5), toy_views, seed=0).source_key(0)


def test_cli_pretrain_resume_and_user_errors(tmp_path, capsys):
    from medssl.cli.main import main

    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump({"method": {"name": "toy_ntxent"}, "backbone": {"name": "toy_linear"}, "data": {"source": "toy_random", "batch_size": 4}, "trainer": {"accelerator": "cpu", "progress_bar": False, "tensorboard": True, "checkpoint_every": 2}}))
    toy_config(tmp_path / "unused")  # registers the toys
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(cfg), f"run_dir={run}", "trainer.max_steps=3"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 3
    assert any((run / "tensorboard").iterdir())
    assert main(["pretrain", "--config", str(cfg), f"run_dir={run}", "trainer.max_steps=5"]) == 0  # resumes at 3
    assert [int(r["step"]) for r in rows(run)] == [0, 1, 2, 3, 4]
    capsys.readouterr()
    assert main(["pretrain", "--config", str(cfg), f"run_dir={run}", "trainer.max_step=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trainer.max_step" in err
    assert main(["pretrain", "--config", str(cfg), f"run_dir={tmp_path / 'new'}", "--resume"]) == 2
    assert main(["pretrain", "--config", str(cfg), "method.temprature=1"]) == 2
