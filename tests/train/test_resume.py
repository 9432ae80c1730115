"""Exact resume: a run killed with SIGKILL and resumed logs the same losses as an uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medssl.train.trainer import fit

from train.toy import toy_config

HERE = Path(__file__).resolve().parent


def read_rows(path: Path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def n_rows(path: Path) -> int:
    try:
        return len(read_rows(path))
    except (OSError, StopIteration, KeyError):
        return 0


def test_killed_run_resumes_to_identical_losses(tmp_path):
    common = {"trainer.max_steps": 12, "trainer.checkpoint_every": 4, "method.dropout": 0.2, "data.num_workers": 0}
    ref = fit(toy_config(tmp_path / "ref", **common), resume=False)
    assert ref["steps_done"] == 12

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    args = [f"{k}={v}" for k, v in {**common, "method.step_delay": 0.25}.items()]
    proc = subprocess.Popen([sys.executable, str(HERE / "run_toy.py"), str(run), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while n_rows(run / "metrics.csv") < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_rows = n_rows(run / "metrics.csv")
    assert 6 <= killed_rows < 12
    assert (run / "checkpoints" / "last.pt").is_file()
    assert not (run / "summary.json").exists()

    resumed = fit(toy_config(run, **common, **{"method.step_delay": 0.25}))  # the run's own config; resume=None: picks up last.pt
    assert resumed["steps_done"] == 12 and resumed["samples_seen"] == 12 * 8

    a, b = read_rows(tmp_path / "ref" / "metrics.csv"), read_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in b] == list(range(12))
    for ra, rb in zip(a, b):
        for key in ("loss", "lr", "center_norm"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-6, rel=1e-6), (ra["step"], key)
    wa = load_file(str(tmp_path / "ref" / "checkpoints" / "final.safetensors"))
    wb = load_file(str(run / "checkpoints" / "final.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-6)


def test_resume_true_without_checkpoint_is_a_config_error(tmp_path):
    from medssl.errors import ConfigError

    with pytest.raises(ConfigError, match="resume"):
        fit(toy_config(tmp_path / "none"), resume=True)
