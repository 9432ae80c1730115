"""`medssl evaluate` on a tiny NIfTI cohort: a table on success, one-line errors with exit status 2."""

import json

import numpy as np
import pytest

from medssl.cli.main import main
from medssl.io.writers import write_nifti


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    lines = []
    for j in range(8):
        sev = j % 2
        img = -1000.0 + 300 * sev + 40 * rng.normal(size=(16, 16, 16))
        img[4:12, 4:12, 4:12] += 600
        lab = np.zeros((16, 16, 16), np.uint8)
        lab[4:12, 4:12, 4:12] = 1
        write_nifti(img.astype(np.float32), root / f"c{j}.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
        write_nifti(lab, root / f"c{j}_seg.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
        lines.append({"id": f"c{j}", "image": f"c{j}.nii.gz", "label": f"c{j}_seg.nii.gz", "modality": "ct",
                      "meta": {"severity": sev}})
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return root


def test_evaluate_writes_tables(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["evaluate", "--checkpoint", "random:unet_encoder", "--task", "classification", "--data",
               str(tiny_cohort / "manifest.jsonl"), "--out", str(out), "--seeds", "0,1", "--label-fraction", "1.0",
               "--no-finetune", "--patch-size", "32,32,32"])
    assert rc == 0
    assert {"results.csv", "results.md", "plot_classification.png"} <= {p.name for p in out.iterdir()}
    text = (out / "results.md").read_text()
    assert "random-init" in text and "knn" in text and "sha256(id)" in text
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # linear and knn rows of the one model
    assert "severity" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--checkpoint", "random:unet_encoder", "--target", "fev1"], "label key 'fev1'"),
        (["--checkpoint", "random:vit_does_not_exist"], "unknown backbone"),
        (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (["--checkpoint", "random:unet_encoder", "--seeds", "a,b"], "--seeds"),
    ],
)
def test_user_errors_exit_2(tiny_cohort, tmp_path, capsys, extra, needle):
    rc = main(["evaluate", "--task", "classification", "--data", str(tiny_cohort / "manifest.jsonl"),
               "--out", str(tmp_path / "o"), "--patch-size", "16,16,16", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1, err


def test_2d_checkpoint_on_volumes_exit_2(tiny_cohort, tmp_path, capsys):
    rc = main(["evaluate", "--checkpoint", "random:unet_encoder", "--task", "classification", "--data",
               str(tiny_cohort / "manifest.jsonl"), "--out", str(tmp_path / "o"), "--patch-size", "16,16"])
    assert rc == 2 and "patch size" in capsys.readouterr().err


def test_two_path_checkpoint_on_an_xray_manifest(tmp_path, capsys):
    """A 3D-recorded MiT checkpoint on a manifest of X-rays only: the 2D path is chosen from the data."""
    import torch
    from PIL import Image
    from torch import nn

    from medssl.checkpoint import save_release
    from medssl.registry import BACKBONES

    rng = np.random.default_rng(0)
    lines = []
    for j in range(8):
        Image.fromarray((rng.uniform(0, 200, (64, 64)) + 40 * (j % 2)).astype(np.uint8)).save(tmp_path / f"x{j}.png")
        lines.append({"id": f"x{j}", "image": f"x{j}.png", "modality": "xray", "meta": {"severity": j % 2}})
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")

    class Holder(nn.Module):
        encoder_prefix = "encoder."

        def __init__(self, enc):
            super().__init__()
            self.encoder = enc

    torch.manual_seed(0)
    bb = {"img_size_2d": 64, "img_size_3d": [16, 64, 64], "with_decoder": False}
    cfg = {"method": {"name": "unimiss", "views": {"xr_size": 64}}, "backbone": {"name": "mit_tiny", **bb}}
    norm = {"kind": "hu_scale", "divisor": 1024.0, "xray": {"kind": "minmax", "min": 0.0, "max": 1.0}}
    ck = save_release(tmp_path / "ck.safetensors", Holder(BACKBONES.build("mit_tiny", **bb)), cfg,
                      {"normalisation": norm, "patch_size": [16, 64, 64]})
    assert json.loads((tmp_path / "ck.json").read_text())["spatial_dims_supported"] == [2, 3]
    rc = main(["evaluate", "--checkpoint", str(ck), "--task", "classification", "--data", str(tmp_path / "manifest.jsonl"),
               "--out", str(tmp_path / "o"), "--seeds", "0", "--label-fraction", "1.0", "--no-finetune", "--no-baseline"])
    assert rc == 0, capsys.readouterr().err
    text = (tmp_path / "o" / "results.md").read_text()
    assert "patch [64, 64]" in text and "unimiss: per-image minmax (as cached) (2D, grey x3)" in text
