"""DeepCluster-V2: spherical k-means against a plain loop, memory bank, targets, loss re-derived."""

import math

import numpy as np
import pytest
import torch

from medssl.losses.deepcluster_loss import DeepClusterLoss, deepcluster_loss, spherical_kmeans


def _plain_kmeans(x, init, iterations):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = x[init].copy()
    assign = None
    for _ in range(iterations):
        assign = np.array([int(np.argmax([float(p @ cc) for cc in c])) for p in x])
        for j in range(len(c)):
            members = x[assign == j]
            if len(members):
                s = members.sum(0)
                c[j] = s / np.linalg.norm(s)
    return c, assign


def test_spherical_kmeans_matches_a_plain_implementation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float64)
    init = np.array([3, 17, 42, 8])
    c, a = spherical_kmeans(torch.from_numpy(x), 4, iterations=7, init=torch.from_numpy(init))
    c_ref, a_ref = _plain_kmeans(x, init, 7)
    assert np.array_equal(a.numpy(), a_ref)
    assert np.allclose(c.numpy(), c_ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(c.numpy(), axis=1), 1.0)


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3)
    x = torch.cat([centres[i] + 0.05 * torch.randn(20, 3, generator=g) for i in range(3)])
    _, a = spherical_kmeans(x, 3, 10, init=torch.tensor([0, 20, 40]))
    assert all(len(set(a[i * 20:(i + 1) * 20].tolist())) == 1 for i in range(3))
    assert len(set(a.tolist())) == 3


def test_loss_is_cross_entropy_at_temperature():
    s = [torch.tensor([[0.5, -0.2, 0.1]]), torch.tensor([[0.0, 0.3, -0.4]])]
    t = torch.tensor([2])
    want = 0.0
    for row in s:
        z = row[0] / 0.1
        want += -(z[2] - math.log(float(torch.exp(z).sum())))
    assert torch.isclose(deepcluster_loss(s, t, 0.1), torch.tensor(float(want) / 2), atol=1e-5)


def test_bank_fifo_clustering_and_targets():
    dc = DeepClusterLoss(dim=3, n_clusters=(2, 3), bank_size=6, iterations=5, cluster_every=10)
    e = torch.randn(4, 3, requires_grad=True)
    loss = dc([e, e])  # bank not clustered yet: zero, graph kept
    assert float(loss.detach()) == 0.0 and loss.requires_grad and int(dc.filled) == 4
    dc([torch.randn(4, 3)] * 2)
    assert int(dc.filled) == 6 and int(dc.ptr) == 2  # FIFO wrapped
    dc.step(0)
    assert bool(dc.clustered)
    for c, k in zip(dc.centroids(), (2, 3)):
        assert c.shape == (k, 3) and torch.allclose(c.norm(dim=1), torch.ones(k), atol=1e-5)
    x = torch.randn(5, 3)
    tg = dc.targets(x)
    for c, t in zip(dc.centroids(), tg):
        want = torch.stack([torch.argmax(torch.stack([torch.dot(xi / xi.norm(), cj) for cj in c])) for xi in x])
        assert torch.equal(t, want)
    views = [torch.randn(5, 3, requires_grad=True) for _ in range(3)]
    dc.eval()
    got = dc(views, bank_views=2)
    anchor = torch.nn.functional.normalize(torch.stack([torch.nn.functional.normalize(v.detach(), dim=1) for v in views[:2]]).mean(0), dim=1)
    want = torch.stack([deepcluster_loss([torch.nn.functional.normalize(v, dim=1) @ c.t() for v in views], t, 0.1)
                        for c, t in zip(dc.centroids(), dc.targets(anchor))]).mean()
    assert torch.isclose(got, want, atol=1e-6)
    got.backward()
    assert views[2].grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="bank_size"):
        DeepClusterLoss(dim=3, n_clusters=(10,), bank_size=4)
    with pytest.raises(ValueError, match="k:"):
        spherical_kmeans(torch.randn(3, 2), 5)
