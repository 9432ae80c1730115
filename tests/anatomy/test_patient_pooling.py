"""Patient-level pooling of DrasCLR patch features, checked against plain re-derivations."""

import numpy as np
import pytest
import torch

from medssl.anatomy import patient as P


def _chain_neighbours():
    # 0 - 1 - 2   3 (isolated)
    return [np.array([1]), np.array([0, 2]), np.array([1]), np.array([], int)]


def test_adjacency_and_normalisation_match_the_formula():
    a = P.grid_adjacency(_chain_neighbours())
    assert a.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    a_hat = P.normalised_adjacency(a)
    deg = [2, 3, 2, 1]  # with the self loop
    for i in range(4):
        for j in range(4):
            want = (1.0 if (a[i, j] or i == j) else 0.0) / np.sqrt(deg[i] * deg[j])
            assert a_hat[i, j] == pytest.approx(want)
    with pytest.raises(ValueError, match="neighbours"):
        P.grid_adjacency([np.array([5])], 1)


def test_mean_and_graph_pool_equal_loops():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 4, 5))
    np.testing.assert_allclose(P.mean_pool(f), [[f[s, :, d].sum() / 4 for d in range(5)] for s in range(3)])
    a_hat = P.normalised_adjacency(P.grid_adjacency(_chain_neighbours()))
    out = P.graph_pool(f, a_hat)
    for s in range(3):
        smooth = np.array([sum(a_hat[i, j] * f[s, j] for j in range(4)) for i in range(4)])
        np.testing.assert_allclose(out[s], np.concatenate([smooth.mean(0), smooth.max(0)]))
    np.testing.assert_allclose(P.pool(f, "graph", a_hat), out)
    with pytest.raises(ValueError, match="kind"):
        P.pool(f, "median")


def test_gated_attention_and_graph_conv_equal_their_formulas():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 6)
    att = P.GatedAttentionPool(6, hidden=4)
    z, a = att(h)
    for s in range(2):
        scores = torch.stack([att.w(torch.tanh(att.V(h[s, n])) * torch.sigmoid(att.U(h[s, n])))[0] for n in range(5)])
        w = torch.exp(scores) / torch.exp(scores).sum()
        torch.testing.assert_close(a[s], w)
        torch.testing.assert_close(z[s], sum(w[n] * h[s, n] for n in range(5)))
    a_hat = P.normalised_adjacency(P.grid_adjacency([np.array([1]), np.array([0, 2]), np.array([1, 3]),
                                                     np.array([2]), np.array([], int)]))
    gc = P.GraphConvPool(6, a_hat, hidden=3)
    z, _ = gc(h)
    A = torch.as_tensor(a_hat, dtype=torch.float32)
    g = torch.relu(torch.stack([A @ gc.lin(h[s]) for s in range(2)]))
    torch.testing.assert_close(z, torch.cat([g.mean(1), g.max(1).values], 1))


def test_cox_loss_equals_the_partial_likelihood_loop():
    torch.manual_seed(1)
    r, t = torch.randn(7), torch.tensor([5.0, 1.0, 3.0, 8.0, 2.0, 6.0, 4.0])
    e = torch.tensor([1, 0, 1, 1, 1, 0, 1])
    terms = [r[i] - torch.log(torch.exp(r[t >= t[i]]).sum()) for i in range(7) if e[i]]
    torch.testing.assert_close(P.cox_loss(r, t, e), -torch.stack(terms).mean())


def test_attention_head_finds_the_informative_patch():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(24, 6, 4)).astype(np.float32)
    y = np.arange(24) % 2
    f[:, 2, 0] += 8.0 * y  # only location 2 carries the class (no overlap under the noise)
    head = P.fit_pooled_head(P.GatedAttentionPool(4, hidden=8), f, y, loss="ce", steps=300, seed=0)
    assert (head.predict(f).argmax(1) == y).mean() == 1.0
    reg = P.fit_pooled_head(P.GatedAttentionPool(4, hidden=8), f, 10 + 5.0 * y, loss="mse", steps=300, seed=0)
    pred = reg.predict(f)[:, 0]
    assert abs(pred[y == 1].mean() - 15) < 1.0 and abs(pred[y == 0].mean() - 10) < 1.0


def test_patch_features_normalise_and_pass_locations():
    class Probe(torch.nn.Module):
        location_dim = 3  # forward takes loc [B, 3] (the backbone contract's location-conditioned form)

        def forward(self, x, loc):
            return torch.cat([x.flatten(1).mean(1, keepdim=True), loc], 1)

    hu = torch.full((3, 1, 4, 4, 4), -1024.0)
    hu[1] = 240.0
    hu[2] = 5000.0  # clipped to 240
    loc = torch.tensor([[0.0, 0.5, -1.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]])
    h = P.patch_features(Probe(), hu, loc, batch_size=2)
    torch.testing.assert_close(h[:, 0], torch.tensor([-1.0, 1.0, 1.0]))
    torch.testing.assert_close(h[:, 1:], loc)
    with pytest.raises(ValueError, match="locations"):
        P.patch_features(Probe(), hu, loc[:2])
