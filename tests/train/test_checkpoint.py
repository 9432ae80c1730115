"""Release checkpoints: safetensors + sidecar round trip, strict encoder loading, `expect`, export."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.checkpoint import export, load_encoder, load_release, save_release
from medssl.errors import CheckpointError

from train.toy import ToyBackbone, ToyMethod, register_toys

CFG = {"method": {"name": "toy_ntxent"}, "backbone": {"name": "toy_linear", "dim": 6}, "seed": 1}
DATA = {"spacing": [1.5, 1.5, 2.0], "normalisation": {"kind": "ct_window", "window": [-1024.0, 3071.0]}, "patch_size": [4, 4]}


@pytest.fixture()
def release(tmp_path):
    register_toys()
    torch.manual_seed(0)
    method = ToyMethod(ToyBackbone(dim=6))
    path = save_release(tmp_path / "ckpt" / "final.safetensors", method, CFG, DATA)
    return path, method


def test_round_trip_and_sidecar(release):
    path, method = release
    state, meta = load_release(path)
    assert set(state) == set(method.state_dict())
    for k, v in method.state_dict().items():
        torch.testing.assert_close(state[k], v)
    assert meta["method"] == "toy_ntxent" and meta["backbone"] == {"name": "toy_linear", "kwargs": {"dim": 6}}
    assert meta["spatial_dims"] == 2 and meta["in_channels"] == 1 and meta["embed_dim"] == 6
    assert meta["spacing"] == DATA["spacing"] and meta["normalisation"] == DATA["normalisation"] and meta["patch_size"] == [4, 4]
    assert meta["encoder_keys"] == ["encoder.fc.bias", "encoder.fc.weight"] and meta["encoder_prefix"] == "encoder."
    assert meta["config"] == CFG and meta["medssl_version"]


def test_load_encoder_is_strict_and_checks_expectations(release):
    path, method = release
    backbone, meta = load_encoder(path, expect={"spatial_dims": 2, "in_channels": 1, "spacing": [1.5, 1.5, 2.0]})
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(backbone(x), method.encoder(x))
    with pytest.raises(CheckpointError) as err:
        load_encoder(path, expect={"spatial_dims": 3, "in_channels": 1, "normalisation": {"kind": "zscore"}})
    msg = str(err.value)
    assert "spatial_dims: checkpoint has 2, expected 3" in msg and "normalisation" in msg and "in_channels" not in msg
    # a sidecar whose backbone arguments do not fit the weights
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["backbone"]["kwargs"]["dim"] = 5
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit|cannot rebuild"):
        load_encoder(path)


def test_unreadable_files_are_checkpoint_errors(release, tmp_path):
    path, _ = release
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    bad.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_release(bad)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="final.json"):
        load_release(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_release(tmp_path / "missing.safetensors")


def test_export_state_dict_loads_with_weights_only(release, tmp_path):
    path, method = release
    out = export(path, to="state-dict", out=tmp_path / "enc.pt")
    sd = torch.load(out, weights_only=True)
    fresh = ToyBackbone(dim=6)
    fresh.load_state_dict(sd, strict=True)
    torch.testing.assert_close(fresh.fc.weight, method.encoder.fc.weight)
    out2 = export(path, to="state-dict", out=tmp_path / "enc.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(out2))) == {"fc.weight", "fc.bias"}
    with pytest.raises(CheckpointError, match="MONAI"):
        export(path, to="monai", out=tmp_path / "m.pt")


def test_export_monai_loads_strictly_into_the_monai_network(tmp_path):
    from medssl.registry import BACKBONES

    if "resnet" not in BACKBONES:
        pytest.skip("no MONAI-based backbone registered")
    from medssl.backbones._common import build_monai

    kwargs = {"spatial_dims": 3, "in_channels": 1, "depth": 10, "width": 4}
    torch.manual_seed(0)
    backbone = BACKBONES.build("resnet", **kwargs)
    method = ToyMethod.__new__(ToyMethod)
    torch.nn.Module.__init__(method)
    method.encoder = backbone
    path = save_release(tmp_path / "r.safetensors", method, {"method": {"name": "x"}, "backbone": {"name": "resnet", **kwargs}}, {})
    from medssl.cli.main import main

    assert main(["export", str(path), "--to", "monai", "--out", str(tmp_path / "monai.pt")]) == 0
    spec = json.loads((tmp_path / "monai.pt.json").read_text())
    net = build_monai(spec)
    net.load_state_dict(torch.load(tmp_path / "monai.pt", weights_only=True), strict=True)
    for k, v in backbone.monai_state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
