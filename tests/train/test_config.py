"""Config schema: YAML + overrides, errors that name the key, presets, constructor checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medssl.config import check_components, config_to_dict, load_config, save_config
from medssl.errors import ConfigError

from train.toy import register_toys

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_yaml_and_overrides_merge_once(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"seed": 1, "trainer": {"max_steps": 5, "precision": "32"}, "method": {"name": "simclr", "temperature": 0.2}, "data": {"batch_size": 4, "patch_size": [8, 8, 8]}}))
    cfg = load_config(p, ["trainer.max_steps=100", "optim.lr=3e-4", "method.temperature=0.1", "trainer.grad_clip=1", "data.patch_size=[16,16,16]"])
    assert cfg.seed == 1 and cfg.trainer.max_steps == 100 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.trainer.grad_clip == 1.0 and isinstance(cfg.trainer.grad_clip, float)
    assert cfg.method.kwargs == {"temperature": 0.1}
    assert cfg.data.kwargs == {"patch_size": [16, 16, 16]}
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"] == {"name": "simclr", "temperature": 0.1}


@pytest.mark.parametrize(
    "override,key",
    [
        ("trainer.max_stpes=3", "trainer.max_stpes"),
        ("optimizer.lr=1", "optimizer"),
        ("trainer.max_steps=ten", "trainer.max_steps"),
        ("trainer.max_steps=1.5", "trainer.max_steps"),
        ("trainer.progress_bar=3", "trainer.progress_bar"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.betas=0.9", "optim.betas"),
        ("schedules=3", "schedules"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.key == key
    assert f"'{key}'" in str(err.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["trainer.max_steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_component_kwargs_checked_against_constructor():
    register_toys()
    ok = load_config(None, ["method.name=toy_ntxent", "method.temperature=0.3", "backbone.name=toy_linear", "backbone.dim=4", "data.source=toy_random", "data.n=10"])
    check_components(ok)
    with pytest.raises(ConfigError) as err:
        check_components(load_config(None, ["method.name=toy_ntxent", "method.temprature=0.3", "backbone.name=toy_linear", "data.source=toy_random"]))
    assert err.value.key == "method.temprature"
    with pytest.raises(ConfigError) as err:
        check_components(load_config(None, ["method.name=no_such_method", "backbone.name=toy_linear", "data.source=toy_random"]))
    assert err.value.key == "method.name"
    with pytest.raises(ConfigError) as err:
        check_components(load_config(None, ["method.name=toy_ntxent", "backbone.name=toy_linear", "data.source=toy_random", "method.backbone=x"]))
    assert err.value.key == "method.backbone"


PRESETS = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_load_and_share_the_same_keys(preset):
    cfg = load_config(preset, ["data.manifest=x/manifest.jsonl", "run_dir=r", "trainer.max_steps=100"])
    assert cfg.trainer.max_steps == 100 and cfg.data.manifest == "x/manifest.jsonl"
    from medssl.registry import METHODS

    if cfg.method.name in METHODS:  # the constructor exists: check its keyword arguments
        check_components(cfg)
