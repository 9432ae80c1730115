"""Gradient accumulation: the DINO / UniMiSS centre moves once per optimiser step with the statistics of the
whole accumulated batch, so accumulate=1, 2 and 4 at one global batch end with the same centre and weights."""

from __future__ import annotations

import pytest
import torch

from medssl.losses.dino_loss import DINOLoss
from medssl.train import trainer as trainer_mod
from medssl.train.state import load_state
from medssl.train.trainer import fit

from train.toy import toy_config

DINO = {"method.name": "dino", "method.global_size": "[4,4]", "method.n_local": 0, "method.out_dim": 16,
        "method.hidden_dim": 8, "method.bottleneck_dim": 4, "trainer.max_steps": 3, "trainer.checkpoint_every": 3,
        "eval.knn_every": 0}


def run(tmp_path, acc):
    fit(toy_config(tmp_path / f"acc{acc}", **{**DINO, "trainer.accumulate": acc}), resume=False)
    return load_state(tmp_path / f"acc{acc}" / "checkpoints" / "last.pt")["method"]


def max_diff(a, b, keys):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in keys)


def test_accumulation_gives_the_centre_and_weights_of_one_large_batch(tmp_path, monkeypatch):
    one, two, four = run(tmp_path, 1), run(tmp_path, 2), run(tmp_path, 4)
    assert float(one["criterion.center"].abs().max()) > 0.01  # the centre did move
    for other in (two, four):
        assert max_diff(one, other, ["criterion.center"]) < 1e-6
        assert max_diff(one, other, list(one)) < 1e-5
    monkeypatch.setattr(trainer_mod, "_deferring", lambda method: [])  # per micro-batch, as before
    per_micro = run(tmp_path / "old", 2)
    assert max_diff(one, per_micro, ["criterion.center"]) > 1e-4


def test_deferred_updates_commit_once_and_a_discard_drops_them():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    ref = DINOLoss(6, center_momentum=0.9)
    ref.update_center([torch.cat([a, b])])
    loss = DINOLoss(6, center_momentum=0.9)
    loss.defer_updates(True)
    loss.update_center([a])
    loss.update_center([b])
    assert torch.count_nonzero(loss.center) == 0  # nothing applied yet
    loss.commit_pending()
    torch.testing.assert_close(loss.center, ref.center)
    loss.update_center([a])
    loss.discard_pending()
    loss.commit_pending()
    torch.testing.assert_close(loss.center, ref.center)
    loss.update_center([b])
    loss.defer_updates(False)  # switching off applies what is pending
    assert not torch.equal(loss.center, ref.center)
    before = loss.center.clone()
    loss.update_center([a])  # immediate again
    assert not torch.equal(loss.center, before)
