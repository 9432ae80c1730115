"""Resuming a run folder with another config: refused with the differing keys named, or recorded as a new segment.

The rules are in :mod:`medssl.train.resume`; the toy method keeps these runs to a few milliseconds a step.
"""

from __future__ import annotations

import json

import pytest
import yaml

from medssl.cli.main import main
from medssl.errors import CheckpointError, ConfigError
from medssl.train.resume import RESUMABLE, config_changes
from medssl.train.trainer import fit

from train.toy import register_toys, toy_config

FIRST = {"trainer.max_steps": 4, "trainer.checkpoint_every": 2}


def read_yaml(path):
    return yaml.safe_load(path.read_text())


def test_config_changes_splits_resumable_keys_and_compares_paths(tmp_path):
    old = {"optim": {"lr": 0.1}, "trainer": {"max_steps": 4}, "data": {"manifest": str(tmp_path / "m.jsonl")}}
    new = {"optim": {"lr": 0.2}, "trainer": {"max_steps": 8}, "data": {"manifest": str(tmp_path / "x" / ".." / "m.jsonl")},
           "method": {"temperature": 0.5}}
    refused, allowed = config_changes(old, new)
    assert refused == {"optim.lr": (0.1, 0.2), "method.temperature": ("<unset>", 0.5)}
    assert allowed == {"trainer.max_steps": (4, 8)}
    assert "optim.lr" not in RESUMABLE and "trainer.time_budget_s" in RESUMABLE


def test_resume_with_another_lr_is_refused_and_the_config_kept(tmp_path):
    run = tmp_path / "run"
    fit(toy_config(run, **FIRST), resume=False)
    first = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.05 in the run, 0\.01 now") as info:
        fit(toy_config(run, **{**FIRST, "trainer.max_steps": 6, "optim.lr": 0.01}))
    assert "trainer.max_steps" not in str(info.value)  # a resumable key is not a difference
    assert "allow_config_change" in str(info.value)
    assert (run / "config.yaml").read_text() == first
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 4


def test_cli_refusal_exits_2_without_traceback(tmp_path, capsys):
    register_toys()
    run = tmp_path / "run"
    args = ["pretrain", f"run_dir={run}", "method.name=toy_ntxent", "backbone.name=toy_linear", "data.source=toy_random",
            "data.batch_size=8", "trainer.max_steps=2", "trainer.progress_bar=false", "trainer.tensorboard=false",
            "trainer.accelerator=cpu", "seed=3"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "trainer.max_steps=4", "method.temperature=0.2", "schedules.warmup_steps=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    assert "method.temperature: 0.5 in the run, 0.2 now" in err and "schedules.warmup_steps" in err


def test_allowed_keys_change_freely_and_update_the_config(tmp_path):
    run = tmp_path / "run"
    fit(toy_config(run, **FIRST), resume=False)
    summary = fit(toy_config(run, **{**FIRST, "trainer.max_steps": 6, "trainer.log_every": 2, "trainer.time_budget_s": 600,
                                          "method.temperature": 0.5}))  # 0.5: the default
    assert summary["steps_done"] == 6 and "config_segments" not in summary
    cfg = read_yaml(run / "config.yaml")
    assert cfg["trainer"]["max_steps"] == 6 and cfg["trainer"]["log_every"] == 2
    assert not list(run.glob("config.segment*.yaml"))


def test_allow_config_change_records_a_second_segment(tmp_path):
    run = tmp_path / "run"
    fit(toy_config(run, **FIRST), resume=False)
    second = {**FIRST, "trainer.max_steps": 6, "optim.lr": 0.01, "trainer.allow_config_change": True}
    summary = fit(toy_config(run, **second))
    assert summary["steps_done"] == 6
    assert read_yaml(run / "config.yaml")["optim"]["lr"] == 0.05  # segment 1 as it was
    assert read_yaml(run / "config.segment2.yaml")["optim"]["lr"] == 0.01
    segments = [{"config": "config.yaml", "from_step": 0},
                {"config": "config.segment2.yaml", "from_step": 4, "changed": ["optim.lr"]}]
    assert summary["config_segments"] == segments
    assert json.loads((run / "summary.json").read_text())["config_segments"] == segments

    # the new segment is now the run's config: resuming it with the same values needs no option
    again = fit(toy_config(run, **{**second, "trainer.max_steps": 8, "trainer.allow_config_change": False}))
    assert again["steps_done"] == 8 and again["config_segments"] == segments
    # a fresh start in the folder drops the old segments
    fresh = fit(toy_config(run, **FIRST), resume=False)
    assert "config_segments" not in fresh and not (run / "config.segment2.yaml").exists()


def test_another_architecture_is_a_clear_error_even_when_changes_are_allowed(tmp_path):
    run = tmp_path / "run"
    fit(toy_config(run, **FIRST), resume=False)
    with pytest.raises(ConfigError, match=r"backbone\.dim: 8 in the run, 16 now"):
        fit(toy_config(run, **{**FIRST, "trainer.max_steps": 6, "backbone.dim": 16}))
    with pytest.raises(CheckpointError, match=r"do not fit the configured method and backbone.*encoder\.fc\.weight \[8, 16\] vs \[16, 16\]"):
        fit(toy_config(run, **{**FIRST, "trainer.max_steps": 6, "backbone.dim": 16, "trainer.allow_config_change": True}))
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 4
