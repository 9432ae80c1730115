"""A release sidecar that lies about the input its weights take (spatial_dims, in_channels) is refused."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.checkpoint import load_encoder, save_release
from medssl.cli.main import main
from medssl.errors import CheckpointError


@pytest.fixture
def release(tmp_path):
    from medssl.registry import BACKBONES

    kwargs = {"spatial_dims": 3, "in_channels": 1, "depth": 10, "width": 4}
    method = torch.nn.Module()
    method.encoder = BACKBONES.build("resnet", **kwargs)
    return save_release(tmp_path / "r.safetensors", method, {"method": {"name": "x"},
                                                             "backbone": {"name": "resnet", **kwargs}}, {})


@pytest.mark.parametrize("key, value", [("spatial_dims", 2), ("in_channels", 3), ("spatial_dims", "3")])
def test_lying_sidecar_is_refused_naming_the_key(release, tmp_path, capsys, key, value):
    _, meta = load_encoder(release, expect={"spatial_dims": 3})  # the truth loads
    side = release.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta[key] = value
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"'{key}' is {value!r}, the backbone it describes takes"):
        load_encoder(release, expect={key: value})  # the caller's expectation matches the lie: still refused
    rc = main(["export", str(release), "--out", str(tmp_path / "e.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and str(side) in err and key in err and "Traceback" not in err
