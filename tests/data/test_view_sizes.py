"""A method whose crops are larger than the data patch is a config error naming both keys."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from medssl.cli.main import main
from medssl.errors import ConfigError
from medssl.train.build import check_view_sizes

ROOT = Path(__file__).resolve().parents[2]


def test_view_larger_than_patch_on_any_axis_is_refused():
    src = SimpleNamespace(patch_size=(32, 32, 16))
    check_view_sizes(SimpleNamespace(view_size=[24, 24, 16]), src)
    check_view_sizes(SimpleNamespace(global_size=[24, 24]), src)  # other dimensionality: not comparable
    with pytest.raises(ConfigError, match=r"method\.view_size.*\[24, 24, 24\] is larger than the data patch "
                                          r"\[32, 32, 16\] \(data\.patch_size\)"):
        check_view_sizes(SimpleNamespace(view_size=[24, 24, 24]), src)
    with pytest.raises(ConfigError, match=r"method\.local_size.*data\.size"):
        check_view_sizes(SimpleNamespace(global_size=20, local_size=40), SimpleNamespace(size=(32, 32)))


def test_pretrain_cli_exits_2_before_training(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("medssl_test_cohort", ROOT / "tests" / "preprocess" / "cohort.py")
    cohort = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cohort)
    manifest = cohort.ct_cohort(tmp_path / "d", 2, shape=(12, 11, 10))
    rc = main(["pretrain", "--config", str(ROOT / "configs" / "simclr_tiny.yaml"), f"data.manifest={manifest}",
               f"run_dir={tmp_path / 'run'}", "method.view_size=[40,40,40]", "trainer.progress_bar=false",
               "trainer.tensorboard=false", "eval.knn_every=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "config key 'method.view_size'" in err and "[32, 32, 32]" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
