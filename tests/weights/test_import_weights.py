"""Safe loading of released checkpoints, key mapping, and the import-weights round trip."""

import argparse
import json
import pickle

import pytest
import torch

from medssl.backbones.mit import MiT
from medssl.checkpoint import load_encoder, load_release
from medssl.cli.main import main
from medssl.errors import CheckpointError, DataError
from medssl.weights import convert_state_dict, load_released_state_dict, strip_prefixes
from medssl.weights.mit_keys import map_mit_key, map_mit_plus_key

from conftest import deterministic_state_dict, load_reference


class _Payload:
    """Stands for an arbitrary object in a pickle: unpickling it needs the class (code)."""

    def __init__(self):
        self.x = 1


def _released_mit_tiny_2d_only():
    """The released MiT-tiny state dict with only the 2D path (small, for fast round trips)."""
    ref = load_reference("arch_unimiss_mit_tiny.npz")
    keys = [(k, s) for k, s in json.loads(str(ref["keys_shapes"])) if "3D" not in k]
    return deterministic_state_dict(keys)


def test_refuses_file_that_needs_unpickling(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(DataError, match="evil.pth: the file needs full unpickling.*trust"):
        load_released_state_dict(path)
    assert set(load_released_state_dict(path, trust=True)) == {"a"}


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": _Payload()}, f)
    with pytest.raises(DataError, match="plain.pkl"):
        load_released_state_dict(path)


def test_dino_checkpoint_prefers_teacher_and_strips_prefixes(tmp_path):
    path = tmp_path / "checkpoint.pth"
    t, s = torch.ones(2), torch.zeros(2)
    torch.save(
        {
            "student": {"module.backbone.transformer.cls_tokens1": s, "module.head.mlp.0.weight": s},
            "teacher": {"backbone.transformer.cls_tokens1": t, "head.mlp.0.weight": t},
            "epoch": 3,
            "args": argparse.Namespace(lr=0.1),  # stored by DINO-style scripts; allowed without --trust
        },
        path,
    )
    sd = load_released_state_dict(path)
    assert set(sd) == {"transformer.cls_tokens1", "head.mlp.0.weight"} and torch.equal(sd["transformer.cls_tokens1"], t)
    sd = load_released_state_dict(path, select="student")
    assert torch.equal(sd["transformer.cls_tokens1"], s)
    converted, dropped = convert_state_dict(sd, "mit_tiny")
    assert list(converted) == ["encoder.cls_token"] and dropped == ["head.mlp.0.weight"]
    with pytest.raises(DataError, match="no state dict under key 'ema'"):
        load_released_state_dict(path, select="ema")


def test_strip_prefixes_and_unknown_keys():
    assert list(strip_prefixes({"module.student.backbone.norm.weight": torch.zeros(1)})) == ["norm.weight"]
    with pytest.raises(CheckpointError, match="unknown to the mit_tiny mapping.*not_a_key"):
        convert_state_dict({"not_a_key": torch.zeros(1)}, "mit_tiny")


def test_mappings_are_one_to_one_over_released_keys():
    for name, mapper in (("arch_unimiss_mit_tiny.npz", map_mit_key), ("arch_unimissplus_mitplus.npz", map_mit_plus_key)):
        ref = load_reference(name)
        keys = [k for k, _ in json.loads(str(ref["keys_shapes"]))]
        mapped = [mapper(k) for k in keys]
        assert None not in mapped and len(set(mapped)) == len(keys)
    assert map_mit_key("transformer.block2.1.attn.sr3D.weight") == "encoder.stages.1.blocks.1.attn.sr.3d.weight"


def test_import_weights_cli_round_trip(tmp_path, capsys):
    sd = _released_mit_tiny_2d_only()
    src = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}, "args": argparse.Namespace(arch="tiny")}, src)
    out = tmp_path / "mit_tiny.safetensors"
    assert main(["import-weights", str(src), "--arch", "mit_tiny", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    state, meta = load_release(out)
    assert meta["method"] == "imported"
    assert meta["backbone"]["name"] == "mit_tiny" and meta["backbone"]["kwargs"]["paths"] == [2]
    assert meta["normalisation"] == {"kind": "ct_hu_scale", "divisor": 1024}
    assert meta["spatial_dims"] == 2 and meta["in_channels"] == 3
    import medssl.backbones.mit  # noqa: F401  (registers mit_* for load_encoder)

    model, _ = load_encoder(out)
    # same numbers as loading the released dict directly through the mapping
    direct = MiT(spatial_dims=2, paths=(2,))
    direct.load_state_dict(convert_state_dict(sd, "mit_tiny")[0])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_cls(x), direct.eval().forward_cls(x))


def test_import_weights_cli_refuses_unsafe_and_bad_arch(tmp_path, capsys):
    src = tmp_path / "evil.pth"
    torch.save({"teacher": {"backbone.norm.weight": torch.ones(48)}, "x": _Payload()}, src)
    out = tmp_path / "o.safetensors"
    assert main(["import-weights", str(src), "--arch", "mit_tiny", "--out", str(out)]) == 2
    assert "needs full unpickling" in capsys.readouterr().err
    assert main(["import-weights", str(src), "--arch", "resnet9", "--out", str(out)]) == 2
    assert "arch" in capsys.readouterr().err
    assert not out.exists()
