"""`medssl drr` end to end on a tiny volume."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medssl.cli.main import main
from medssl.drr import Pose, hu_to_mu, render
from conftest import write_tiny_ct


def test_cli_writes_png_npy_and_geometry(tmp_path, capsys):
    hu, aff = write_tiny_ct(tmp_path / "ct.nii.gz")
    assert main(["drr", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out"), "--views", "pa,lateral",
                 "--size", "24", "--energy", "70"]) == 0
    raw = np.load(tmp_path / "out" / "ct_drr.npy", allow_pickle=False)
    geo = json.loads((tmp_path / "out" / "ct_drr.json").read_text())
    assert raw.shape == (2, 24, 24) and geo["views"] == ["pa", "lateral"] and geo["energy_kev"] == 70
    # the recorded geometry reproduces the raw array
    poses = [Pose(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in p.items() if k in Pose.__annotations__})
             for p in geo["poses"]]
    again = render(hu_to_mu(hu, 70.0), np.array(geo["voxel_to_world"]), poses)
    assert np.allclose(raw, again, rtol=1e-5)
    for name in geo["images"]:
        png = np.asarray(Image.open(tmp_path / "out" / name))
        assert png.shape == (24, 24) and png.dtype == np.uint8 and png.max() == 255
    assert main(["drr", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "o2"), "--sod", "10"]) == 2
    assert "--sod" in capsys.readouterr().err  # the option, not the library argument
