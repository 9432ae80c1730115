"""Registry-wide checks: every registered backbone and method at tiny sizes, on CPU.

Backbones (every name in ``BACKBONES.names()``, 2D and 3D where the backbone
runs both): the contract's shapes (``forward`` -> ``[B, embed_dim]``,
``forward_intermediates`` channel counts, ``forward_features`` = the last
map, ``project`` -> ``[B, projection_dim]``), backward, finite values.

Methods (every name in ``METHODS.names()``): one training step gives a
finite scalar loss and finite gradients, and a short step along the negative
gradient lowers the loss on the same fixed batch (same random draws, buffers
restored). Then the release checkpoint of the method round-trips: the
evaluation's encoder (:func:`medssl.eval.models.from_checkpoint`) holds
exactly the checkpoint's encoder tensors.

A new backbone or method fails the coverage tests until it has a tiny entry
here; the entries reuse each family's own test helpers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from medssl.registry import BACKBONES, METHODS
from medssl.train.data import collate_views

# ---------------------------------------------------------------------------------------------
# backbones: name -> (kwargs, {spatial_dims: input shape})

MIT_CT = (16, 32, 64)  # the smallest 3D input whose deepest MiT stage keeps more than one position (instance norm)
BACKBONE_CASES: Dict[str, Tuple[Dict[str, Any], Dict[int, Tuple[int, ...]]]] = {
    "resnet": (dict(depth=10, width=4), {2: (2, 1, 16, 16), 3: (2, 1, 16, 16, 16)}),
    "unet_encoder": (dict(features=(4, 4, 8, 8, 8)), {2: (2, 1, 32, 32), 3: (2, 1, 32, 32, 32)}),
    "swin": (dict(feature_size=6, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4),
             {2: (2, 1, 32, 32), 3: (2, 1, 32, 32, 32)}),
    "vit": (dict(img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2),
            {2: (2, 1, 16, 16), 3: (2, 1, 16, 16, 16)}),
    "cond_cnn3d": (dict(widths=(4, 4, 8, 8, 16), num_experts=2, rep_dim=8), {3: (2, 1, 16, 16, 16)}),
    "slice_resnet": (dict(depth=10, width=4, embed_dim=16, volume_depth=1, heads=2, head_dim=8, ffn_dim=24,
                          offset_groups=2, dropout=0.0), {2: (2, 1, 24, 24), 3: (2, 1, 4, 24, 24)}),
    "mit_tiny": (dict(img_size_2d=64, img_size_3d=MIT_CT), {2: (2, 3, 64, 64), 3: (2, 1, *MIT_CT)}),
    "mit_small": (dict(img_size_2d=64, img_size_3d=MIT_CT, with_decoder=False), {2: (2, 3, 64, 64), 3: (2, 1, *MIT_CT)}),
    "mit_plus": (dict(img_size_2d=64, img_size_3d=MIT_CT, width=0.25), {2: (2, 3, 64, 64), 3: (2, 1, *MIT_CT)}),
    "resenc_unet": (dict(patch_size=[16, 16, 16], base_features=4, max_features=16, n_blocks_per_stage=[1, 1, 1]),
                    {3: (2, 1, 16, 16, 16)}),
}
BACKBONE_PARAMS = [(n, d) for n in sorted(BACKBONE_CASES) for d in sorted(BACKBONE_CASES[n][1])]


def _medssl_names(registry) -> set:
    """The names medssl itself registers (tests may add toys to the same registries)."""
    return {n for n in registry.names() if getattr(registry.get(n), "__module__", "").startswith("medssl.")}


def test_every_registered_backbone_has_a_tiny_case():
    assert set(BACKBONE_CASES) == _medssl_names(BACKBONES)


def _needs(name: str) -> None:
    if name == "resenc_unet":
        pytest.importorskip("dynamic_network_architectures", reason="an optional extra (make venv installs it)")


@pytest.mark.parametrize("name,sd", BACKBONE_PARAMS)
def test_backbone_contract_forward_backward_finite(name, sd):
    _needs(name)
    kwargs, shapes = BACKBONE_CASES[name]
    torch.manual_seed(0)
    model = BACKBONES.build(name, spatial_dims=sd, **kwargs)
    x = torch.rand(*shapes[sd], generator=torch.Generator().manual_seed(1))
    feats = model.forward_intermediates(x)
    assert [f.shape[1] for f in feats] == list(model.feature_channels)
    assert all(f.shape[0] == x.shape[0] and f.ndim == sd + 2 for f in feats)
    torch.testing.assert_close(model.forward_features(x), feats[-1])
    h = model(x)
    assert tuple(h.shape) == (x.shape[0], model.embed_dim) and torch.isfinite(h).all()
    z = model.project(h)
    assert tuple(z.shape) == (x.shape[0], model.projection_dim)
    if model.location_dim:  # a location-conditioned backbone reads ``loc``
        loc = torch.rand(x.shape[0], model.location_dim, generator=torch.Generator().manual_seed(2)) * 2 - 1
        h = model(x, loc=loc)
        assert tuple(h.shape) == (x.shape[0], model.embed_dim)
    (model.project(h).square().mean() + feats[-1].square().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# methods: name -> () -> (method, fixed batch)

def _baseline(name: str) -> Callable[[], Tuple[Any, Dict[str, Any]]]:
    def make():
        from methods.test_baselines import _batch, _method

        m = _method(name, 3)
        return m, _batch(m, 3)
    return make


def _mae_unet():
    from backbones.test_resenc_unet import _tiny

    torch.manual_seed(0)
    m = METHODS.build("mae_unet", backbone=_tiny(decoder=True), view_size=16, block_size=4, mask_ratio=0.5)
    gen, rng = m.view_generator(), np.random.default_rng(0)
    vol = {"image": torch.rand(1, 24, 24, 24, generator=torch.Generator().manual_seed(3))}
    return m, default_collate([gen(vol, rng) for _ in range(2)])


def _clustering_baseline(name: str):
    def make():
        from methods.test_iicc import BB

        torch.manual_seed(0)
        bb = BACKBONES.build("slice_resnet", **{**BB, "volume_depth": 0})
        m = METHODS.build(name, backbone=bb, n_prototypes=8, n_clusters=[4, 4], bank_size=8, cluster_every=1,
                          proj_hidden=16, proj_dim=8, freeze_prototypes_steps=0, global_size=24, local_size=12,
                          n_local=1, view_dims=2)
        vg = m.view_generator()
        return m, collate_views([vg({"image": torch.rand(1, 32, 32)}, np.random.default_rng(i)) for i in range(6)])
    return make


def _iicc():
    from methods.test_iicc import _method

    m = _method()
    torch.manual_seed(1)
    vg = m.view_generator()
    samples = [{"image": torch.rand(1, 8, 28, 28), "image2d": torch.rand(1, 32, 32), "id": f"c{i}"} for i in range(4)]
    return m, collate_views([vg(s, np.random.default_rng(i)) for i, s in enumerate(samples)])


def _drasclr():
    from medssl.methods.drasclr import DrasCLR
    from methods.test_drasclr import batch, tiny_backbone

    torch.manual_seed(0)
    m = DrasCLR(tiny_backbone(), num_locations=5, queue_size=8, proj_dim=8, momentum=0.9)
    b = batch()
    b["view2"] = b["view1"] + 0.05 * torch.randn_like(b["view1"])
    return m, b


def _t3d(name: str):
    def make():
        from methods.test_t3d import batch_for, tiny_t3d

        m = tiny_t3d(name)
        return m, batch_for(m)
    return make


def _unimiss(name: str, kind: str):
    def make():
        from methods.test_unimiss import batch, make as build

        m = build(name)
        return m, batch(kind, B=2, masks=True)
    return make


METHOD_CASES: Dict[str, Callable[[], Tuple[Any, Dict[str, Any]]]] = {
    "simclr": _baseline("simclr"),
    "moco": _baseline("moco"),
    "dino": _baseline("dino"),
    "mae": _baseline("mae"),
    "mae_unet": _mae_unet,
    "swav": _clustering_baseline("swav"),
    "deepcluster_v2": _clustering_baseline("deepcluster_v2"),
    "iicc": _iicc,
    "drasclr": _drasclr,
    "t3d": _t3d("t3d"),
    "t3d_vision": _t3d("t3d_vision"),
    "unimiss": _unimiss("unimiss", "xr"),
    "unimiss_plus": _unimiss("unimiss_plus", "mixed"),
}
#: methods whose first step only fills a memory bank; the check starts after one taken step
WARM_UP = {"deepcluster_v2"}
SCHED = {"lr": 1e-3, "weight_decay": 0.0, "ema_momentum": 0.9, "teacher_temp": 0.04}


def test_every_registered_method_has_a_tiny_case():
    assert set(METHOD_CASES) == _medssl_names(METHODS)


def _step_loss(method, batch) -> torch.Tensor:
    torch.manual_seed(0)  # the same masks, crops and dropout on every call
    return method.training_step(batch)["loss"]


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_method_step_is_finite_and_lowers_the_loss(name, tmp_path):
    if name == "mae_unet":
        _needs("resenc_unet")
    method, batch = METHOD_CASES[name]()
    method.train()
    if name in WARM_UP:
        method.on_before_step(0, SCHED)
        _step_loss(method, batch).backward()
        method.zero_grad(set_to_none=True)
        method.on_after_step(0, SCHED)
    buffers = {k: v.clone() for k, v in method.named_buffers()}
    method.on_before_step(1, SCHED)
    loss = _step_loss(method, batch)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    for p in method.frozen_parameters():  # as the trainer does
        p.grad = None
    params = [p for _, p in method.trainable_parameters() if p.grad is not None]
    assert params and all(torch.isfinite(p.grad).all() for p in params)
    norm = torch.sqrt(sum(p.grad.double().square().sum() for p in params))
    with torch.no_grad():  # a plain gradient step of fixed length (tiny heads can have very large gradients)
        for p in params:
            p -= (1e-3 / norm).to(p.dtype) * p.grad
        for k, v in method.named_buffers():
            if k in buffers and "running_" not in k and "num_batches" not in k:
                v.copy_(buffers[k])  # the same loss function before and after the step
        after = _step_loss(method, batch)
    assert math.isfinite(float(after)) and float(after) < float(loss), (float(loss), float(after))


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_downstream_encoder_holds_the_checkpoints_encoder_tensors(name, tmp_path):
    """``from_checkpoint(...).build`` / ``.encoder`` carry exactly the release checkpoint's encoder weights."""
    if name == "mae_unet":
        _needs("resenc_unet")
    from medssl.checkpoint import load_release, save_release
    from medssl.eval.inputs import InputAdapter
    from medssl.eval.models import from_checkpoint

    method, _ = METHOD_CASES[name]()
    with torch.no_grad():  # weights unlike any fresh initialisation, so a missed load shows
        for i, p in enumerate(method.parameters()):
            p.add_(0.01 * (i % 7 + 1))
    path = save_release(tmp_path / "m.safetensors", method, {"method": {"name": name}, "backbone": _backbone_of(name)})
    state, meta = load_release(path)
    prefix = meta["encoder_prefix"]
    want = {k[len(prefix):]: state[k] for k in meta["encoder_keys"]}
    spec = from_checkpoint(path)
    for model in (spec.build(0), spec.encoder(0)):
        inner = model.backbone if isinstance(model, InputAdapter) else model
        got = inner.state_dict()
        assert set(got) == set(want)
        for k, v in want.items():
            assert torch.equal(got[k], v), k


def _backbone_of(name: str) -> Dict[str, Any]:
    """The backbone name and arguments each method case builds (what a run's config records)."""
    from backbones.test_resenc_unet import TINY as RESENC

    from methods.test_iicc import BB as SLICE
    from methods.test_unimiss import CT

    resnet = dict(name="resnet", spatial_dims=3, depth=10, width=4)
    slice_2d = dict(name="slice_resnet", **{**SLICE, "volume_depth": 0})
    t3d = dict(name="resnet", spatial_dims=3, depth=10, width=4, stem_stride=1, max_pool=False)
    table = {
        "simclr": resnet, "moco": resnet, "dino": resnet,
        "mae": dict(name="vit", spatial_dims=3, img_size=16, patch_size=4, hidden_size=16, mlp_dim=32, num_layers=2,
                    num_heads=2),
        "mae_unet": dict(name="resenc_unet", **RESENC, decoder=True),
        "swav": slice_2d, "deepcluster_v2": slice_2d, "iicc": dict(name="slice_resnet", **SLICE),
        "drasclr": dict(name="cond_cnn3d", widths=(4, 4, 8, 8, 16), num_experts=2, rep_dim=16, conditioned=True),
        "t3d": t3d, "t3d_vision": t3d,
        "unimiss": dict(name="mit_tiny", img_size_2d=32, img_size_3d=CT),
        "unimiss_plus": dict(name="mit_plus", img_size_2d=32, img_size_3d=CT),
    }
    return dict(table[name])
