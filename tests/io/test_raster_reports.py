"""PNG/JPEG readers (PIL-written files) and report readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medssl.errors import DataError
from medssl.io import load_report_table, read_image2d, read_report, write_png


def test_png_8_and_16_bit(tmp_path):
    a8 = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(a8).save(tmp_path / "a.png")
    img = read_image2d(tmp_path / "a.png")
    assert img.array.dtype == np.float32 and img.array.shape == (6, 8)
    np.testing.assert_allclose(img.array, a8 / 255.0, atol=1e-7)
    a16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)
    write_png(a16, tmp_path / "b.png")
    np.testing.assert_allclose(read_image2d(tmp_path / "b.png").array, a16 / 65535.0, atol=1e-7)


def test_rgb_jpeg_becomes_grey(tmp_path):
    g = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "c.jpg", quality=98)
    img = read_image2d(tmp_path / "c.jpg", spacing=(0.2, 0.3))
    assert img.array.shape == (16, 16) and img.spacing == (0.2, 0.3)
    np.testing.assert_allclose(img.array, g / 255.0, atol=0.03)  # lossy


def test_bad_2d_inputs(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        read_image2d(tmp_path / "broken.png")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match=r"x.bmp: unsupported extension '.bmp'"):
        read_image2d(tmp_path / "x.bmp")
    with pytest.raises(ValueError, match="spacing"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
        read_image2d(tmp_path / "ok.png", spacing=(0.0, 1.0))


def test_text_report_and_empty_report(tmp_path):
    (tmp_path / "r.txt").write_text("Findings: no nodule.\n", encoding="utf-8")
    assert read_report(tmp_path / "r.txt") == "Findings: no nodule."
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: report is empty"):
        read_report(tmp_path / "empty.txt")


def test_csv_and_jsonl_report_columns(tmp_path):
    (tmp_path / "r.csv").write_text(
        "VolumeName,Findings_EN,Impressions_EN\n"
        "train_1_a_1.nii.gz,Emphysema in upper lobes.,Mild emphysema.\n"
        'train_2_a_1.nii.gz,"Nodule, 6 mm.",\n'
        "train_3_a_1.nii.gz,,\n", encoding="utf-8")
    cols = ["Findings_EN", "Impressions_EN"]
    table = load_report_table(tmp_path / "r.csv", key_column="VolumeName", column=cols)
    assert table == {"train_1_a_1.nii.gz": "Emphysema in upper lobes.\n\nMild emphysema.",
                     "train_2_a_1.nii.gz": "Nodule, 6 mm."}
    assert read_report(tmp_path / "r.csv", key="train_2_a_1.nii.gz", key_column="VolumeName",
                       column="Findings_EN") == "Nodule, 6 mm."
    with pytest.raises(DataError, match="r.csv: no non-empty report for key 'train_3_a_1.nii.gz'"):
        read_report(tmp_path / "r.csv", key="train_3_a_1.nii.gz", key_column="VolumeName", column=cols)
    with pytest.raises(DataError, match=r"r.csv: missing column\(s\) \['Findings'\]"):
        load_report_table(tmp_path / "r.csv", key_column="VolumeName", column="Findings")
    rows = [{"file": "a.nii.gz", "text": "One."}, {"file": "b.nii.gz", "text": "Two."}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert read_report(tmp_path / "r.jsonl", key="b.nii.gz", key_column="file", column="text") == "Two."
