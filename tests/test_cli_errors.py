"""One error path for the CLI: user errors exit 2 with one line naming the file, key or option;
internal errors keep their traceback."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.cli.main import main
from medssl.io.writers import write_nifti

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "simclr_tiny.yaml")


def run(argv, capsys):
    """(exit code, stderr) of ``medssl ARGV`` run in this process."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _phantom(path, spacing=2.0):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (12, 10, 8)], indexing="ij")
    hu = np.where(x ** 2 + y ** 2 + z ** 2 < 0.6, 40.0, -1000.0).astype(np.float32)
    return write_nifti(hu, path, affine=np.diag([spacing, spacing, spacing, 1.0]))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A dataset folder in MSD layout with a manifest, and a finished cache of it."""
    root = tmp_path_factory.mktemp("cli_errors")
    ds = root / "ds"
    for cid in ("a", "b"):
        _phantom(ds / "imagesTr" / f"{cid}.nii.gz")
    info = {"name": "x", "modality": {"0": "CT"}, "training": [{"image": f"./imagesTr/{c}.nii.gz"} for c in "ab"]}
    (ds / "dataset.json").write_text(json.dumps(info))
    manifest = ds / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": c, "image": f"imagesTr/{c}.nii.gz", "modality": "ct"}) + "\n"
                                for c in "ab"))
    assert main(["preprocess", str(manifest), "--out", str(root / "cache"), "--spacing", "4", "--quiet"]) == 0
    (root / "a_file.txt").write_text("x")
    return {"root": root, "ds": ds, "manifest": manifest, "cache": root / "cache", "file": root / "a_file.txt",
            "volume": ds / "imagesTr" / "a.nii.gz"}


# --- options and config values -------------------------------------------------------------------------------

OPTION_CASES = {
    "manifest --modality pet": (["manifest", "{ds}", "--layout", "msd", "--modality", "pet", "--out", "{root}/m.jsonl"],
                                "--modality"),
    "manifest --split training": (["manifest", "{ds}", "--layout", "folder", "--split", "training",
                                   "--out", "{root}/m.jsonl"], "--split"),
    "manifest --out a folder": (["manifest", "{ds}", "--layout", "msd", "--out", "{root}"], "--out"),
    "drr --photons -5": (["drr", "{volume}", "--out", "{root}/drr", "--size", "8", "--photons", "-5"], "--photons"),
    "drr --views top": (["drr", "{volume}", "--out", "{root}/drr", "--size", "8", "--views", "pa,top"], "--views"),
    "drr --energy 5": (["drr", "{volume}", "--out", "{root}/drr", "--size", "8", "--energy", "5"], "--energy"),
    "drr --out a file": (["drr", "{volume}", "--out", "{file}", "--size", "8"], "--out"),
    "preprocess --shard 3/2": (["preprocess", "{manifest}", "--out", "{root}/c2", "--shard", "3/2"], "--shard"),
    "preprocess --ct-window 5,1": (["preprocess", "{manifest}", "--out", "{root}/c2", "--ct-window", "5,1"],
                                   "--ct-window"),
    "preprocess --workers -1": (["preprocess", "{manifest}", "--out", "{root}/c2", "--workers", "-1"], "--workers"),
    "preprocess --max-voxels x": (["preprocess", "{manifest}", "--out", "{root}/c2", "--max-voxels", "x"],
                                  "--max-voxels"),
    "evaluate --device banana": (["evaluate", "--checkpoint", "random:resnet", "--task", "classification",
                                  "--data", "{manifest}", "--out", "{root}/ev", "--device", "banana"], "--device"),
    "evaluate --out a file": (["evaluate", "--checkpoint", "random:resnet", "--task", "classification",
                               "--data", "{manifest}", "--out", "{file}"], "--out"),
    "evaluate --seeds -1": (["evaluate", "--checkpoint", "random:resnet", "--task", "classification",
                             "--data", "{manifest}", "--out", "{root}/ev", "--seeds", "0,-1"], "--seeds"),
    "export --to onnx": (["export", "{file}", "--to", "onnx", "--out", "{root}/x.pt"], "--to"),
    "synth --xray-size -4": (["synth", "--out", "{root}/s", "--preset", "tiny", "--xray-size", "-4"], "--xray-size"),
    "synth --n 0": (["synth", "--out", "{root}/s", "--preset", "tiny", "--n", "0"], "--n"),
    "synth --out a file": (["synth", "--out", "{file}", "--preset", "tiny", "--n", "1"], "--out"),
}
CONFIG_CASES = {
    "negative lr": ("optim.lr=-1", "optim.lr"),
    "negative seed": ("seed=-3", "'seed'"),
    "negative workers": ("data.num_workers=-2", "data.num_workers"),
    "zero batch": ("data.batch_size=0", "data.batch_size"),
    "devices=0": ("trainer.devices=0", "trainer.devices"),
    "unknown accelerator": ("trainer.accelerator=tpu", "trainer.accelerator"),
    "betas out of range": ("optim.betas=[0.9,1.5]", "optim.betas"),
    "one beta": ("optim.betas=[0.9]", "optim.betas"),
    "momentum 1": ("optim.momentum=1.0", "optim.momentum"),
    "ema above 1": ("schedules.ema_momentum=1.5", "schedules.ema_momentum"),
    "zero accumulate": ("trainer.accumulate=0", "trainer.accumulate"),
    "nan lr": ("optim.lr=.nan", "optim.lr"),
    "probe share 0": ("eval.probe_share=0", "eval.probe_share"),
    "a list where a string belongs": ("trainer.accelerator=[cpu]", "trainer.accelerator"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_bad_options_exit_2_naming_the_option(data, capsys, name):
    argv, option = OPTION_CASES[name]
    code, err = run([a.format(**data) for a in argv], capsys)
    assert code == 2 and f"option '{option}'" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_bad_config_values_exit_2_naming_the_key(capsys, name):
    override, key = CONFIG_CASES[name]
    code, err = run(["pretrain", "--config", TINY, override, "--print-config"], capsys)
    assert code == 2 and key in err and err.startswith("error: config key")


def test_run_dir_that_is_a_file(data, capsys):
    code, err = run(["pretrain", "--config", TINY, f"run_dir={data['file']}", f"data.manifest={data['manifest']}",
                     f"data.cache={data['cache']}", "trainer.accelerator=cpu"], capsys)
    assert code == 2 and "config key 'run_dir'" in err and str(data["file"]) in err


def test_good_config_still_prints(capsys):
    assert main(["pretrain", "--config", TINY, "trainer.devices=auto", "seed=7", "--print-config"]) == 0
    assert "seed: 7" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["- a\n- b\n", "[1, 2]\n"])
def test_config_file_that_is_not_a_mapping(tmp_path, capsys, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    code, err = run(["pretrain", "--config", path, "--print-config"], capsys)
    assert code == 2 and "--config" in err and str(path) in err and "mapping" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_where_there_is_none(data, tmp_path, capsys):
    code, err = run(["pretrain", "--config", TINY, "trainer.accelerator=cuda", f"data.manifest={data['manifest']}",
                     f"data.cache={data['cache']}", f"run_dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and "trainer.accelerator" in err and "no CUDA device" in err
    assert not (tmp_path / "run").exists()
    code, err = run(["evaluate", "--checkpoint", "random:resnet", "--task", "classification", "--data",
                     data["manifest"], "--out", tmp_path / "ev", "--device", "cuda:0"], capsys)
    assert code == 2 and "--device" in err and "no CUDA device" in err


# --- files: dataset.json, cache files, sidecars --------------------------------------------------------------

@pytest.mark.parametrize("entry", [{"label": "./labelsTr/a.nii.gz"}, {"image": ["./imagesTr/a.nii.gz"]},
                                   {"image": ""}, "just a string"])
def test_dataset_json_entries(tmp_path, capsys, entry):
    ds = tmp_path / "ds"
    _phantom(ds / "imagesTr" / "a.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": [entry]}))
    code, err = run(["manifest", ds, "--layout", "msd", "--out", tmp_path / "m.jsonl"], capsys)
    assert code == 2 and str(ds / "dataset.json") in err and "training" in err


CACHE_DAMAGE = {
    "plan.json not JSON": ("plan.json", "{not json", "not valid JSON"),
    "plan.json unknown key": ("plan.json", '{"spacing": [4, 4, 4], "bogus": 1}', "bogus"),
    "plan.json a list": ("plan.json", "[1, 2]", "expected an object"),
    "fingerprint.json not JSON": ("fingerprint.json", "[1,", "not valid JSON"),
    "skipped.json not a list": ("skipped.json", "{}", "expected a list"),
    "meta.json without its record": ("cases/a/meta.json", "{}", "record"),
}


@pytest.mark.parametrize("name", list(CACHE_DAMAGE))
def test_damaged_cache_files_are_named(data, tmp_path, capsys, name):
    import shutil

    rel, text, problem = CACHE_DAMAGE[name]
    cache = tmp_path / "cache"
    shutil.copytree(data["cache"], cache)
    (cache / rel).write_text(text)
    if rel.startswith("cases/"):
        shutil.rmtree(cache / "cases" / "b")  # so that the run has a case to write and rewrites the index
    code, err = run(["preprocess", data["manifest"], "--out", cache, "--spacing", "4", "--quiet"], capsys)
    assert code == 2 and str(cache / rel) in err and problem in err


def test_case_folder_without_meta_and_too_long_ids(data, tmp_path, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(data["cache"], cache)
    (cache / "cases" / "b" / "meta.json").unlink()
    code, err = run(["preprocess", data["manifest"], "--out", cache, "--spacing", "4", "--quiet"], capsys)
    assert code == 2 and str(cache / "cases" / "b") in err and "meta.json" in err
    long_id = "x" * 300
    manifest = data["ds"] / "long.jsonl"
    manifest.write_text(json.dumps({"id": long_id, "image": "imagesTr/a.nii.gz", "modality": "ct"}) + "\n")
    code, err = run(["preprocess", manifest, "--out", tmp_path / "c2", "--spacing", "4", "--quiet"], capsys)
    assert code == 2 and "too long" in err


def test_sidecar_without_encoder_prefix(tmp_path, capsys):
    from medssl.checkpoint import save_release
    from medssl.registry import BACKBONES

    kwargs = {"spatial_dims": 3, "in_channels": 1, "depth": 10, "width": 4}
    method = torch.nn.Module()
    method.encoder = BACKBONES.build("resnet", **kwargs)
    path = save_release(tmp_path / "r.safetensors", method, {"method": {"name": "x"},
                                                            "backbone": {"name": "resnet", **kwargs}}, {})
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["encoder_prefix"]
    side.write_text(json.dumps(meta))
    code, err = run(["export", path, "--out", tmp_path / "e.pt"], capsys)
    assert code == 2 and str(side) in err and "encoder_prefix" in err


# --- the line between user errors and internal errors ----------------------------------------------------------

def test_internal_errors_keep_their_traceback(data, tmp_path, monkeypatch):
    import medssl.preprocess as pre

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(pre, "preprocess_manifest", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["preprocess", str(data["manifest"]), "--out", str(tmp_path / "c"), "--quiet"])

    def io_bug(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "/dev/sda")

    monkeypatch.setattr(pre, "preprocess_manifest", io_bug)
    with pytest.raises(OSError):
        main(["preprocess", str(data["manifest"]), "--out", str(tmp_path / "c"), "--quiet"])


def test_a_full_disk_is_one_line(data, tmp_path, monkeypatch, capsys):
    import medssl.preprocess as pre

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "c" / "x.npy"))

    monkeypatch.setattr(pre, "preprocess_manifest", full)
    code, err = run(["preprocess", data["manifest"], "--out", tmp_path / "c", "--quiet"], capsys)
    assert code == 2 and "No space left on device" in err and "x.npy" in err and "as they were" in err
