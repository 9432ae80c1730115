"""Distributed correctness: 2 CPU processes (gloo, DDP through Fabric) train exactly like one
process on the same global batch, for NT-Xent with embeddings gathered across ranks.

With plain SGD (no momentum, no weight decay) the first update is ``-lr * grad``,
so equal weights after each step mean equal gradients.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medssl.train.trainer import fit

from train.toy import ToyBackbone, ToyMethod, toy_config

HERE = Path(__file__).resolve().parent

SETTINGS = {
    "trainer.max_steps": 2, "trainer.checkpoint_every": 10, "trainer.accelerator": "cpu",
    "optim.name": "sgd", "optim.lr": 0.5, "optim.momentum": 0.0, "optim.weight_decay": 0.0,
    "schedules.warmup_steps": 0, "method.dropout": 0.0, "data.batch_size": 8,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(run_dir: Path, settings: dict) -> None:
    port = free_port()
    args = [f"{k}={v}" for k, v in {**settings, "trainer.devices": 2, "trainer.strategy": "ddp"}.items()]
    procs = []
    for rank in range(2):
        env = {
            **os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1]),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0",
        }
        procs.append(subprocess.Popen([sys.executable, str(HERE / "run_toy.py"), str(run_dir), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]


def losses(run_dir: Path):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    single = fit(toy_config(tmp_path / "one", **SETTINGS), resume=False)
    assert single["world_size"] == 1
    run_two_ranks(tmp_path / "two", SETTINGS)

    w1 = load_file(str(tmp_path / "one" / "checkpoints" / "final.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "checkpoints" / "final.safetensors"))
    torch.manual_seed(3)  # the toy config's seed: the trainer's initial weights
    init = ToyMethod(ToyBackbone(), dropout=0.0).state_dict()
    params = [k for k in w1 if k != "center"]  # `center` is a per-rank running buffer of the toy
    assert set(params) == {"encoder.fc.weight", "encoder.fc.bias", "head.1.weight", "head.1.bias"}
    for k in params:
        assert (w1[k] - init[k]).abs().max() > 1e-3, f"{k} did not move"
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-5, abs=1e-6)
