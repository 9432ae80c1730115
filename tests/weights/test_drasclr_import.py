"""Import of the authors' released DrasCLR checkpoint layout onto ``cond_cnn3d``."""

import json

import numpy as np
import pytest
import torch


from medssl.backbones.cond_cnn3d import CondCNN3d
from medssl.checkpoint import load_encoder, load_release
from medssl.cli.main import main
from medssl.errors import CheckpointError
from medssl.weights import convert_state_dict, load_released_state_dict
from medssl.weights.drasclr_keys import map_drasclr_key, released_kwargs

from conftest import deterministic_state_dict, load_reference, reference_input


def _released_file(path, sd, extra_head=None):
    """Save ``sd`` the way the released training script does: the MoCo module under DataParallel."""
    state = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    state.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in sd.items()})
    state["module.queue"] = torch.randn(3, 128, 16)
    state["module.queue_ptr"] = torch.zeros(3, dtype=torch.long)
    state.update(extra_head or {})
    torch.save({"epoch": 20, "arch": "drasclr", "state_dict": state}, path)


def test_import_round_trip_reproduces_reference_outputs(tmp_path, capsys):
    ref = load_reference("arch_drasclr_encoder.npz")
    sd = deterministic_state_dict(json.loads(str(ref["keys_shapes"])))
    src = tmp_path / "drasclr_released.pth.tar"
    _released_file(src, sd)
    out = tmp_path / "drasclr.safetensors"
    assert main(["import-weights", str(src), "--arch", "cond_cnn3d", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    state, meta = load_release(out)
    assert meta["backbone"]["name"] == "cond_cnn3d"
    assert meta["backbone"]["kwargs"]["num_experts"] == 8 and meta["backbone"]["kwargs"]["conditioned"] is True
    assert meta["normalisation"]["divisor"] == 632.0
    assert not any("encoder_k" in k or "queue" in k for k in state)
    enc, _ = load_encoder(out)
    enc.eval()
    x = reference_input(tuple(ref["x3d_shape"]), float(ref["input_frequency"]))
    with torch.no_grad():
        h = enc(x, torch.from_numpy(ref["loc"]))
        z = enc.project(h)
    np.testing.assert_allclose(h.numpy(), ref["x3d_out1"], rtol=1e-4, atol=1e-5 * np.abs(ref["x3d_out1"]).max())
    np.testing.assert_allclose(z.numpy(), ref["x3d_out0"], rtol=1e-4, atol=1e-5 * np.abs(ref["x3d_out0"]).max())
    for k, v in sd.items():  # every encoder tensor lands unchanged under its own name
        torch.testing.assert_close(state[f"encoder.{k}"], v)


def test_mlp_head_and_kwargs_of_a_small_unconditioned_encoder(tmp_path):
    torch.manual_seed(0)
    model = CondCNN3d(widths=(2, 3, 4, 5, 6), num_experts=3, rep_dim=7, conditioned=False)
    sd = model.state_dict()
    fc_w, fc_b = sd.pop("fc.weight"), sd.pop("fc.bias")
    head = {"module.encoder_q.fc.0.weight": fc_w, "module.encoder_q.fc.0.bias": fc_b,
            "module.encoder_q.fc.2.weight": torch.randn(7, 7), "module.encoder_q.fc.2.bias": torch.randn(7)}
    src = tmp_path / "small.pth"
    _released_file(src, sd, head)
    loaded = load_released_state_dict(src)  # ``module.`` already stripped here
    kw = released_kwargs(loaded)
    assert kw == {"in_channels": 1, "widths": [2, 3, 4, 5, 6], "num_experts": 1, "loc_dim": 3, "rep_dim": 7,
                  "conditioned": False}
    converted, dropped = convert_state_dict(loaded, "cond_cnn3d")
    assert set(converted) == set(model.state_dict())
    torch.testing.assert_close(converted["fc.weight"], fc_w)
    assert "encoder_q.fc.2.weight" in dropped and "queue" in dropped and any(k.startswith("encoder_k.") for k in dropped)


def test_key_mapping_rules():
    assert map_drasclr_key("module.encoder_q.downsample2.conv3._routing_fn.fc.weight") == "downsample2.conv3._routing_fn.fc.weight"
    assert map_drasclr_key("encoder_q.module.bn4.running_var") == "bn4.running_var"
    assert map_drasclr_key("encoder_q.fc.weight") == "fc.weight"
    assert map_drasclr_key("module.encoder_k.conv1.weight") is None
    assert map_drasclr_key("queue_ptr") is None
    with pytest.raises(KeyError):
        map_drasclr_key("encoder_q.layer9.weight")


def test_unknown_key_is_named(tmp_path, capsys):
    src = tmp_path / "bad.pth"
    torch.save({"state_dict": {"encoder_q.conv1.weight": torch.zeros(8, 8, 1, 3, 3, 3),
                               "encoder_q.attention.weight": torch.zeros(2)}}, src)
    with pytest.raises(CheckpointError, match="attention"):
        convert_state_dict(load_released_state_dict(src), "cond_cnn3d", source=src)
