"""No output path may be an input: export, import-weights and preprocess refuse before writing anything."""

import json

import pytest
import torch

from medssl.checkpoint import load_encoder, save_release
from medssl.cli.main import main
from medssl.registry import BACKBONES

KWARGS = {"spatial_dims": 3, "in_channels": 1, "depth": 10, "width": 4}


class _Method(torch.nn.Module):
    encoder_prefix = "encoder."

    def __init__(self):
        super().__init__()
        self.encoder = BACKBONES.build("resnet", **KWARGS)


@pytest.fixture()
def release(tmp_path):
    torch.manual_seed(0)
    return save_release(tmp_path / "run" / "final.safetensors", _Method(),
                        {"method": {"name": "simclr"}, "backbone": {"name": "resnet", **KWARGS}}, {})


def _snapshot(*paths):
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize("out", ["final.safetensors", "final.json", "final", "./final.safetensors"])
def test_export_never_replaces_its_input(release, capsys, out):
    side = release.with_suffix(".json")
    before = _snapshot(release, side)
    target = release.parent / out
    code = main(["export", str(release), "--to", "state-dict", "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "Traceback" not in err
    assert _snapshot(release, side) == before
    load_encoder(release)  # still a loadable release checkpoint


def test_export_never_replaces_another_release(release, tmp_path, capsys):
    other = save_release(tmp_path / "other" / "final.safetensors", _Method(),
                         {"method": {"name": "moco"}, "backbone": {"name": "resnet", **KWARGS}}, {})
    before = _snapshot(other, other.with_suffix(".json"))
    for target in (other, other.with_suffix(".json")):
        assert main(["export", str(release), "--out", str(target)]) == 2
        assert "release checkpoint" in capsys.readouterr().err
    assert _snapshot(other, other.with_suffix(".json")) == before
    # an export next to the release, and a re-export over an earlier export, are fine
    assert main(["export", str(release), "--out", str(release.with_name("final.pt"))]) == 0
    assert main(["export", str(release), "--out", str(release.with_name("final.pt"))]) == 0
    assert json.loads(release.with_name("final.pt.json").read_text())["to"] == "state-dict"


def test_export_through_a_link_is_refused(release, tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(release)
    before = _snapshot(release)
    assert main(["export", str(release), "--out", str(link)]) == 2
    assert _snapshot(release) == before


def test_import_weights_never_replaces_its_input_or_a_trained_release(release, tmp_path, capsys):
    src = tmp_path / "weights.safetensors"
    src.write_bytes(b"released weights")
    assert main(["import-weights", str(src), "--arch", "mit_tiny", "--out", str(src)]) == 2
    assert "input" in capsys.readouterr().err and src.read_bytes() == b"released weights"
    side_src = tmp_path / "w.json"  # the input is where the output's sidecar would go
    side_src.write_text("{}")
    assert main(["import-weights", str(side_src), "--arch", "mit_tiny", "--out", str(tmp_path / "w.safetensors")]) == 2
    assert side_src.read_text() == "{}"
    capsys.readouterr()
    before = _snapshot(release, release.with_suffix(".json"))
    assert main(["import-weights", str(src), "--arch", "mit_tiny", "--out", str(release)]) == 2
    assert "trained 'simclr'" in capsys.readouterr().err
    assert _snapshot(release, release.with_suffix(".json")) == before


def _dataset(root):
    from medssl.io.writers import write_nifti
    import numpy as np

    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (10, 9, 8)], indexing="ij")
    hu = np.where(x ** 2 + y ** 2 + z ** 2 < 0.6, 40.0, -1000.0).astype(np.float32)
    write_nifti(hu, root / "images" / "a.nii.gz", affine=np.eye(4))
    manifest = root / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "images/a.nii.gz", "modality": "ct"}) + "\n")
    return manifest


@pytest.mark.parametrize("where", ["dataset", "images", "above", "manifest", "file"])
def test_preprocess_cache_must_not_hold_the_inputs(tmp_path, capsys, where):
    manifest = _dataset(tmp_path / "data")
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    out = {"dataset": tmp_path / "data", "images": tmp_path / "data" / "images", "above": tmp_path,
           "manifest": manifest, "file": other}[where]
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["preprocess", str(manifest), "--out", str(out), "--spacing", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "option '--out'" in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing  # nothing written
    assert other.read_text() == "keep"
    assert main(["preprocess", str(manifest), "--out", str(tmp_path / "data" / "cache"), "--spacing", "2",
                 "--quiet"]) == 0
