"""Losses against lightly's reference values and against slow loop re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.losses import DINOLoss, NTXentLoss, SwAVLoss, infonce_loss, mse_masked, ntxent_loss, swav_loss
from medssl.losses import _dist
from tests.conftest import load_reference


def _t(ref, key):
    return torch.from_numpy(np.asarray(ref[key]))


def test_ntxent_matches_reference():
    ref = load_reference("ssl_losses_reference.npz")
    loss = NTXentLoss(temperature=float(ref["ntxent_temperature"]))(_t(ref, "ntxent_z0"), _t(ref, "ntxent_z1"))
    assert loss.item() == pytest.approx(float(ref["ntxent_loss"]), rel=1e-5)


def test_dino_loss_and_center_match_reference():
    ref = load_reference("ssl_losses_reference.npz")
    tt, st, m = (float(v) for v in ref["dino_params"])
    crit = DINOLoss(out_dim=32, student_temp=st, teacher_temp=tt, center_momentum=m)
    loss = crit(list(_t(ref, "dino_teacher")), list(_t(ref, "dino_student")))
    assert loss.item() == pytest.approx(float(ref["dino_loss"]), rel=1e-5)
    np.testing.assert_allclose(crit.center.numpy(), ref["dino_center_after"].reshape(1, -1), rtol=1e-5, atol=1e-7)


def test_swav_matches_reference():
    ref = load_reference("ssl_losses_reference.npz")
    crit = SwAVLoss(
        temperature=float(ref["swav_temperature"]),
        epsilon=float(ref["swav_epsilon"]),
        iterations=int(ref["swav_sinkhorn_iterations"]),
    )
    loss = crit(list(_t(ref, "swav_scores")))
    assert loss.item() == pytest.approx(float(ref["swav_loss"]), rel=1e-5)


def _ntxent_loop(z0: np.ndarray, z1: np.ndarray, tau: float) -> float:
    z = np.concatenate([z0, z1]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z0)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[pos] / tau) / denom)
    return total / (2 * n)


def test_ntxent_gather_uses_rank_offset(monkeypatch):
    """Rank 1 of 2: local rows are the second half of the global batch; loss = those rows' terms."""
    g = torch.Generator().manual_seed(0)
    a0, a1, b0, b1 = (torch.randn(3, 5, generator=g) for _ in range(4))  # rank 0: a, rank 1: b
    others = [torch.nn.functional.normalize(a0, dim=1), torch.nn.functional.normalize(a1, dim=1)]
    calls = []

    def fake_gather(x):  # what rank 0 would contribute, in rank order
        calls.append(x)
        return torch.cat([others[len(calls) - 1], x])

    monkeypatch.setattr(_dist, "is_distributed", lambda: True)
    monkeypatch.setattr(_dist, "rank", lambda: 1)
    monkeypatch.setattr(_dist, "gather_with_grad", fake_gather)
    loss = ntxent_loss(b0, b1, temperature=0.3, gather_distributed=True)
    assert len(calls) == 2
    # re-derivation: anchors are rank 1's rows inside the global 2N set
    z0, z1 = torch.cat([a0, b0]).numpy(), torch.cat([a1, b1]).numpy()
    z = np.concatenate([z0, z1]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, terms = 6, []
    for i in [3, 4, 5, 9, 10, 11]:
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / 0.3) for k in range(2 * n) if k != i)
        terms.append(-math.log(math.exp(z[i] @ z[pos] / 0.3) / denom))
    assert loss.item() == pytest.approx(float(np.mean(terms)), rel=1e-5)


def test_ntxent_matches_loop():
    g = torch.Generator().manual_seed(1)
    z0, z1 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert ntxent_loss(z0, z1, 0.5).item() == pytest.approx(_ntxent_loop(z0.numpy(), z1.numpy(), 0.5), rel=1e-5)


def test_infonce_with_queue_matches_loop():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(9, 6, generator=g), dim=1)
    tau = 0.2
    qn = (q / q.norm(dim=1, keepdim=True)).double().numpy()
    kn = (k / k.norm(dim=1, keepdim=True)).double().numpy()
    qu = queue.double().numpy()
    total = 0.0
    for i in range(4):
        pos = math.exp(qn[i] @ kn[i] / tau)
        negs = sum(math.exp(qn[i] @ qu[j] / tau) for j in range(9))
        total += -math.log(pos / (pos + negs))
    assert infonce_loss(q, k, queue, tau).item() == pytest.approx(total / 4, rel=1e-5)


def test_infonce_key_gets_no_gradient():
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    infonce_loss(q, k, torch.nn.functional.normalize(torch.randn(5, 4), dim=1)).backward()
    assert q.grad is not None and k.grad is None


def test_masked_mse_matches_loop():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    num, den = 0.0, 0
    for b in range(2):
        for l in range(5):
            if mask[b, l]:
                num += sum((pred[b, l, p].item() - target[b, l, p].item()) ** 2 for p in range(3)) / 3
                den += 1
    assert mse_masked(pred, target, mask).item() == pytest.approx(num / den, rel=1e-5)
    # normalised targets: each target patch to zero mean, unit (unbiased) variance
    t = target.double().numpy()
    tn = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    num = sum(((pred[b, l].double().numpy() - tn[b, l]) ** 2).mean() for b in range(2) for l in range(5) if mask[b, l])
    assert mse_masked(pred, target, mask, norm_target=True).item() == pytest.approx(num / den, rel=1e-5)


def test_swav_codes_are_balanced():
    scores = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    from medssl.losses import sinkhorn

    q = sinkhorn(scores, epsilon=0.5, iterations=100)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0, rtol=1e-4)
    np.testing.assert_allclose(q.sum(0).numpy(), 64 / 8, rtol=1e-3)
    assert swav_loss([scores, scores.flip(0)]).isfinite()


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: NTXentLoss(temperature=0.0), "temperature"),
        (lambda: DINOLoss(out_dim=0), "out_dim"),
        (lambda: DINOLoss(out_dim=4, center_momentum=1.5), "center_momentum"),
        (lambda: SwAVLoss(iterations=0), "iterations"),
        (lambda: ntxent_loss(torch.zeros(3, 4), torch.zeros(2, 4)), "z0"),
        (lambda: mse_masked(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(2, 2)), "mask"),
    ],
)
def test_bad_arguments_name_the_argument(build, word):
    with pytest.raises(ValueError, match=word):
        build()
