"""resenc_unet (nnU-Net's Residual Encoder U-Net), mae_unet, the nnunet_ct scaling and the nnU-Net export's checks.

Needs dynamic-network-architectures only (nnunetv2 is not imported here; the
round trip through nnU-Net's own code is tests/weights/test_nnunet_interop.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dynamic_network_architectures", reason="an optional extra (make venv installs it)")

from medssl.backbones.resenc_unet import default_arch  # noqa: E402
from medssl.checkpoint import save_release  # noqa: E402
from medssl.cli.main import main  # noqa: E402
from medssl.errors import CheckpointError, ConfigError  # noqa: E402
from medssl.normalisation import describe, from_hu, resolve, to_hu  # noqa: E402
from medssl.registry import BACKBONES, METHODS  # noqa: E402

TINY = dict(patch_size=[16, 16, 16], base_features=4, max_features=16, n_blocks_per_stage=[1, 1, 1])


def _tiny(**kw):
    torch.manual_seed(0)
    return BACKBONES.build("resenc_unet", **{**TINY, **kw})


def _plans(path: Path, arch: dict, patch, *, spacing=(2.0, 2.0, 2.0), klass=None, stats=None) -> Path:
    """A minimal nnU-Net plans file (the entries medssl reads)."""
    plans = {
        "plans_name": "nnUNetResEncUNetMPlans", "transpose_forward": [0, 1, 2],
        "foreground_intensity_properties_per_channel": {"0": stats or {
            "mean": -150.0, "std": 300.0, "percentile_00_5": -1000.0, "percentile_99_5": 500.0}},
        "configurations": {"3d_fullres": {
            "patch_size": list(patch), "spacing": list(spacing), "normalization_schemes": ["CTNormalization"],
            "architecture": {"network_class_name": klass or
                             "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                             "arch_kwargs": arch, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}},
            "3d_big": {"inherits_from": "3d_fullres", "patch_size": [32, 32, 32]}},
    }
    path.write_text(json.dumps(plans))
    return path


def test_recipe_topology_and_feature_maps():
    bb = _tiny()
    assert bb.arch["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]  # 16 -> 8 -> 4: a map 4 wide stops pooling
    assert bb.arch["features_per_stage"] == [4, 8, 16] and bb.embed_dim == 16 and bb.spatial_dims == 3
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = bb.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8), (2, 16, 4, 4, 4)]
    assert [f.shape[1] for f in feats] == bb.feature_channels
    assert tuple(bb(x).shape) == (2, 16)
    assert not any(k.startswith("decoder.") for k in bb.state_dict())
    # anisotropic spacing: the coarse axis is not pooled at first and keeps 1-wide kernels
    an = default_arch([16, 64, 64], [5.0, 1.0, 1.0])
    assert an["strides"][1] == [1, 2, 2] and an["kernel_sizes"][0] == [1, 3, 3]


def test_decoder_reconstructs_at_input_size_and_gradients_flow():
    bb = _tiny(decoder=True)
    keys = bb.state_dict()
    assert any(k.startswith("decoder.encoder.stem.") for k in keys)  # nnU-Net's decoder refers to its encoder
    x = torch.rand(1, 1, 16, 16, 16)
    y = bb.forward_dense(x)
    assert tuple(y.shape) == (1, 1, 16, 16, 16)
    y.square().mean().backward()
    frozen = [n for n, p in bb.named_parameters() if not p.requires_grad]
    assert frozen and all("seg_layers.0" in n for n in frozen)  # the deep-supervision output only
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bb.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="divisible"):
        bb.forward_dense(torch.rand(1, 1, 14, 16, 16))
    with pytest.raises(ConfigError, match="decoder"):
        _tiny().forward_dense(x)


def test_grad_checkpointing_gives_the_same_gradients():
    bb = _tiny()
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    bb(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in bb.named_parameters() if p.grad is not None}
    bb.zero_grad()
    bb.set_grad_checkpointing(True)
    bb(x).square().sum().backward()
    for n, g in ref.items():
        torch.testing.assert_close(dict(bb.named_parameters())[n].grad, g, rtol=1e-5, atol=1e-7)


def test_plans_file_builds_the_planned_network_and_release_kwargs_rebuild_it(tmp_path):
    arch = default_arch([16, 16, 16], base_features=4, max_features=16, n_blocks_per_stage=[1, 2, 1])
    plans = _plans(tmp_path / "plans.json", arch, [16, 16, 16])
    bb = BACKBONES.build("resenc_unet", plans=str(plans), configuration="3d_fullres")
    assert bb.arch["n_blocks_per_stage"] == [1, 2, 1] and bb.planned_patch_size == [16, 16, 16]
    again = BACKBONES.build("resenc_unet", **json.loads(json.dumps(bb.release_kwargs())))  # as a sidecar stores it
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in bb.state_dict().items()}
    inherited = BACKBONES.build("resenc_unet", plans=str(plans), configuration="3d_big")
    assert inherited.planned_patch_size == [32, 32, 32] and inherited.arch == bb.arch


@pytest.mark.parametrize("kwargs, key", [
    (dict(patch_size=None), "patch_size"),
    (dict(arch={"n_stages": 1}), "arch"),
    (dict(spatial_dims=2), "spatial_dims"),
    (dict(in_channels=0), "in_channels"),
    (dict(n_blocks_per_stage=[1, 1]), "n_blocks_per_stage"),
    (dict(not_an_arg=1), "not_an_arg"),
])
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        BACKBONES.build("resenc_unet", **{**TINY, **kwargs})


def test_plans_errors_name_the_file_and_the_entry(tmp_path):
    arch = default_arch([16, 16, 16], base_features=4, max_features=16)
    plain = _plans(tmp_path / "plain.json", arch, [16, 16, 16],
                   klass="dynamic_network_architectures.architectures.unet.PlainConvUNet")
    with pytest.raises(ConfigError, match="PlainConvUNet"):
        BACKBONES.build("resenc_unet", plans=str(plain))
    ok = _plans(tmp_path / "ok.json", arch, [16, 16, 16])
    with pytest.raises(ConfigError, match="no configuration '2d'"):
        BACKBONES.build("resenc_unet", plans=str(ok), configuration="2d")
    with pytest.raises(ConfigError, match="base_features"):  # the recipe's keys do not mix with a plans file
        BACKBONES.build("resenc_unet", plans=str(ok), base_features=8)
    evil = _plans(tmp_path / "evil.json", {**arch, "nonlin": "os.system"}, [16, 16, 16])
    with pytest.raises(ConfigError, match="os.system"):  # only known torch classes, nothing is imported by name
        BACKBONES.build("resenc_unet", plans=str(evil))
    with pytest.raises(Exception, match="missing.json"):
        BACKBONES.build("resenc_unet", plans=str(tmp_path / "missing.json"))


def test_mae_unet_loss_counts_masked_voxels_only_and_a_step_lowers_it():
    from medssl.losses.mse_masked_voxels import mse_masked_voxels

    target = torch.zeros(1, 1, 2, 2, 2)
    pred = torch.zeros(1, 1, 2, 2, 2)
    pred[0, 0, 0, 0, 0] = 3.0  # wrong on a masked voxel
    pred[0, 0, 1, 1, 1] = 100.0  # wrong on a visible voxel: ignored
    mask = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True  # 4 masked voxels
    assert float(mse_masked_voxels(pred, target, mask)) == pytest.approx(9.0 / 4)

    torch.manual_seed(0)
    method = METHODS.build("mae_unet", backbone=_tiny(decoder=True), view_size=16, block_size=4, mask_ratio=0.5)
    gen = method.view_generator()
    rng = np.random.default_rng(0)
    vol = {"image": torch.rand(1, 24, 24, 24, generator=torch.Generator().manual_seed(3))}
    views = [gen(vol, rng) for _ in range(2)]
    batch = {k: torch.stack([v[k] for v in views]) for k in ("image", "mask")}
    assert tuple(batch["mask"].shape) == (2, 4, 4, 4) and int(batch["mask"][0].sum()) == 32
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(4):
        out = method.training_step(batch)
        losses.append(float(out["loss"].detach()))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_mae_unet_refuses_a_backbone_without_decoder_and_bad_views():
    with pytest.raises(ConfigError, match="backbone.decoder"):
        METHODS.build("mae_unet", backbone=_tiny())
    with pytest.raises(ConfigError, match="view_size"):
        METHODS.build("mae_unet", backbone=_tiny(decoder=True), view_size=10, block_size=2)  # total stride 4
    with pytest.raises(ConfigError, match="view_size"):
        METHODS.build("mae_unet", backbone=_tiny(decoder=True), view_size=16, block_size=6)


def test_nnunet_ct_scaling_and_its_plans_reference(tmp_path):
    stats = {"mean": -100.0, "std": 250.0, "percentile_00_5": -900.0, "percentile_99_5": 400.0}
    plans = _plans(tmp_path / "p.json", default_arch([16, 16, 16]), [16, 16, 16], stats=stats)
    spec = resolve({"kind": "nnunet_ct", "plans": str(plans), "window": None})
    assert spec["window"] == [-900.0, 400.0] and spec["mean"] == -100.0 and spec["std"] == 250.0
    hu = np.array([-2000.0, -900.0, -100.0, 150.0, 400.0, 3000.0], np.float32)
    np.testing.assert_allclose(from_hu(hu, spec), [-3.2, -3.2, 0.0, 1.0, 2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(to_hu(from_hu(hu, spec), spec), np.clip(hu, -900, 400), rtol=1e-6)
    assert "nnunet_ct" in describe(spec)
    with pytest.raises(ValueError, match="plans"):
        resolve({"kind": "nnunet_ct"})
    with pytest.raises(Exception, match="foreground_intensity_properties"):
        resolve({"kind": "nnunet_ct", "fingerprint": str(_write(tmp_path / "f.json", {"spacings": []}))})


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _release(tmp_path: Path, **kw) -> Path:
    torch.manual_seed(0)
    bb = BACKBONES.build("resenc_unet", **kw)
    method = METHODS.build("simclr", backbone=bb, proj_hidden_dim=8, proj_dim=4, view_size=16)
    cfg = {"method": {"name": "simclr"}, "backbone": {"name": "resenc_unet", **kw}}
    meta = {"spacing": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16],
            "normalisation": {"kind": "ct_window", "window": [-1350, 150]}}
    return save_release(tmp_path / "final.safetensors", method, cfg, meta)


def test_export_names_every_mismatch_with_the_plans(tmp_path, capsys):
    ckpt = _release(tmp_path, **TINY)
    other = default_arch([16, 16, 16], base_features=8, max_features=32, n_blocks_per_stage=[1, 1, 1])
    plans = _plans(tmp_path / "plans.json", other, [16, 16, 16])
    code = main(["export", str(ckpt), "--to", "nnunet", "--plans", str(plans), "--out", str(tmp_path / "w.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "features_per_stage: checkpoint [4, 8, 16], plans [8, 16, 32]" in err
    assert "Traceback" not in err and not (tmp_path / "w.pth").exists()

    moved = _plans(tmp_path / "moved.json", default_arch([16, 16, 16], base_features=4, max_features=16,
                                                         n_blocks_per_stage=[1, 1, 1]), [16, 16, 24])
    with pytest.raises(CheckpointError, match=r"patch size: checkpoint planned for \[16, 16, 16\], plans \[16, 16, 24\]"):
        from medssl.weights.nnunet_export import export_nnunet

        export_nnunet(ckpt, plans=moved, out=tmp_path / "w.pth")
    assert main(["export", str(ckpt), "--to", "nnunet", "--out", str(tmp_path / "w.pth")]) == 2
    assert "--plans" in capsys.readouterr().err


def test_export_writes_the_planned_network_with_a_fresh_decoder(tmp_path, capsys):
    ckpt = _release(tmp_path, **TINY)
    arch = default_arch([16, 16, 16], base_features=4, max_features=16, n_blocks_per_stage=[1, 1, 1])
    plans = _plans(tmp_path / "plans.json", arch, [16, 16, 16])
    out = tmp_path / "w.pth"
    assert main(["export", str(ckpt), "--to", "nnunet", "--plans", str(plans), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "normalisation: pretrained on HU window [-1350, 150]" in err  # nnU-Net will feed CTNormalization
    saved = torch.load(out, weights_only=True)
    weights, facts = saved["network_weights"], saved["medssl"]
    assert facts["pretrained"] == {"encoder": True, "decoder": False} and facts == json.loads((tmp_path / "w.pth.json").read_text())
    from safetensors.torch import load_file

    release = load_file(str(ckpt))
    for key, value in release.items():
        if key.startswith("encoder."):
            assert torch.equal(weights[key[len("encoder."):]], value), key
            assert torch.equal(weights["decoder." + key[len("encoder."):]], value), key
    assert any(k.startswith("decoder.stages.") for k in weights) and not any(".seg_layers." in k for k in weights)
    assert weights["decoder.encoder.stem.convs.0.conv.weight"].data_ptr() == weights["encoder.stem.convs.0.conv.weight"].data_ptr()


def test_a_crop_the_strides_reduce_to_one_voxel_is_a_config_error():
    net = BACKBONES.build("resenc_unet", patch_size=[32, 32, 32], base_features=4, max_features=16,
                          n_blocks_per_stage=[1, 1, 1, 1])
    stride = net.total_stride[0]
    with pytest.raises(ConfigError, match="leaves one voxel"):
        net(torch.zeros(2, 1, stride, stride, stride))  # instance norm would fail on the last stage's one voxel
    with pytest.raises(ConfigError, match="divisible by the encoder's stride"):
        net(torch.zeros(2, 1, stride + 4, stride + 4, stride + 4))  # the residual shortcut would not line up
    out = net(torch.zeros(2, 1, 2 * stride, stride, stride))  # 2 x 1 x 1 voxels at the last stage
    assert out.shape == (2, net.embed_dim) and torch.isfinite(out).all()
