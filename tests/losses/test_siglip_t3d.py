"""SigLIP, soft-target InfoNCE and report-weighted crop InfoNCE against plain loop re-derivations."""

import math

import pytest
import torch

from medssl.losses.siglip_loss import SigLIPLoss, siglip_loss
from medssl.losses.soft_infonce_loss import crop_soft_infonce, report_targets, soft_infonce_loss


def _unit(x):
    return [[c / math.sqrt(sum(d * d for d in v)) for c in v] for v in x.tolist()]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


@pytest.mark.parametrize("b", [1, 2, 5])
def test_siglip_matches_loop(b):
    g = torch.Generator().manual_seed(b)
    img, txt = torch.randn(b, 6, generator=g), torch.randn(b, 6, generator=g)
    t, bias = 7.0, -3.0
    x, y = _unit(img), _unit(txt)
    ref = 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            ref += -math.log(1.0 / (1.0 + math.exp(-z * (t * _dot(x[i], y[j]) + bias))))
    ref /= b
    assert siglip_loss(img, txt, math.log(t), bias).item() == pytest.approx(ref, rel=1e-5)


def test_siglip_module_learns_scale_and_bias_and_prefers_matched_pairs():
    loss = SigLIPLoss()
    assert loss.log_scale.item() == pytest.approx(math.log(10)) and loss.bias.item() == -10
    x = torch.randn(4, 8)
    matched, shuffled = loss(x, x), loss(x, x.roll(1, 0))
    assert matched < shuffled
    matched.backward()
    assert loss.log_scale.grad is not None and loss.bias.grad is not None


@pytest.mark.parametrize("b", [2, 4])
def test_soft_infonce_matches_loop(b):
    g = torch.Generator().manual_seed(10 + b)
    a, c = torch.randn(b, 5, generator=g), torch.randn(b, 5, generator=g)
    tgt = torch.softmax(torch.randn(b, b, generator=g), dim=1)
    tau = 0.2
    x, y = _unit(a), _unit(c)
    s = [[_dot(x[i], y[j]) / tau for j in range(b)] for i in range(b)]

    def ce(rows, w):
        tot = 0.0
        for i in range(b):
            lse = math.log(sum(math.exp(v) for v in rows[i]))
            tot += -sum(w[i][j] * (rows[i][j] - lse) for j in range(b))
        return tot / b

    wt = tgt.tolist()
    col = [[wt[j][i] for j in range(b)] for i in range(b)]
    col = [[v / sum(r) for v in r] for r in col]
    ref = 0.5 * (ce(s, wt) + ce([[s[j][i] for j in range(b)] for i in range(b)], col))
    assert soft_infonce_loss(a, c, tgt, tau).item() == pytest.approx(ref, rel=1e-5)
    # identity targets: the symmetric CLIP loss
    hard = 0.5 * (torch.nn.functional.cross_entropy(torch.tensor(s), torch.arange(b))
                  + torch.nn.functional.cross_entropy(torch.tensor(s).T, torch.arange(b)))
    assert soft_infonce_loss(a, c, None, tau).item() == pytest.approx(hard.item(), rel=1e-5)


def test_report_targets_softmax_of_cosines():
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    t = report_targets(r, temperature=0.5)
    u = _unit(r)
    for i in range(3):
        e = [math.exp(_dot(u[i], u[j]) / 0.5) for j in range(3)]
        assert t[i].tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-5)


@pytest.mark.parametrize("b, k", [(2, 2), (3, 1), (2, 3)])
def test_crop_soft_infonce_matches_loop(b, k):
    g = torch.Generator().manual_seed(b * 10 + k)
    z = torch.randn(b, k, 4, generator=g)
    w = torch.softmax(torch.randn(b, b, generator=g), dim=1)
    tau = 0.3
    crops = [(i, m) for i in range(b) for m in range(k)]
    u = {c: v for c, v in zip(crops, _unit(z.reshape(b * k, 4)))}
    total = 0.0
    for a in crops:
        others = [c for c in crops if c != a]
        raw = {c: w[a[0], c[0]].item() / sum(1 for o in others if o[0] == c[0]) for c in others}
        norm = sum(raw.values())
        lse = math.log(sum(math.exp(_dot(u[a], u[c]) / tau) for c in others))
        total += -sum(raw[c] / norm * (_dot(u[a], u[c]) / tau - lse) for c in others)
    ref = total / len(crops)
    assert crop_soft_infonce(z, w, tau).item() == pytest.approx(ref, rel=1e-5)


def test_crop_loss_rewards_grouping_by_report():
    # volumes 0 and 1 share a report, volume 2 does not: embeddings grouped the same way score lower
    r = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w = report_targets(r, 0.05)
    grouped = torch.tensor([[[1.0, 0.0]] * 2, [[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2])
    split = torch.tensor([[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2, [[0.0, 1.0]] * 2])
    assert crop_soft_infonce(grouped, w, 0.1) < crop_soft_infonce(split, w, 0.1)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="img, txt"):
        siglip_loss(torch.zeros(2, 3), torch.zeros(3, 3), 0.0, 0.0)
    with pytest.raises(ValueError, match="volume_targets"):
        crop_soft_infonce(torch.zeros(2, 2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="targets"):
        soft_infonce_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
