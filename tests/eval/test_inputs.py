"""The harness feeds each checkpoint its recorded normalisation and runs two-path backbones on 2D data."""

import numpy as np
import pytest
import torch
from torch import nn

from medssl.checkpoint import save_release
from medssl.errors import CheckpointError
from medssl.eval.compare import evaluate_models
from medssl.eval.data import memory_data
from medssl.eval.inputs import InputAdapter
from medssl.eval.models import baseline_for, from_checkpoint, random_init
from medssl.eval.tasks import PRIMARY_METRIC, EvalSettings, primary_metric
from medssl.registry import BACKBONES, TASKS

CACHE = {"kind": "ct_window", "window": [-1024.0, 3071.0]}
RESNET = {"name": "resnet", "spatial_dims": 3, "depth": 10, "width": 4, "stem_stride": 1, "max_pool": False}


class _Holder(nn.Module):
    encoder_prefix = "encoder."

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


class Recorder(nn.Module):
    """A backbone stand-in that records every input it is given, then runs the real one."""

    def __init__(self, inner: nn.Module, seen: list) -> None:
        super().__init__()
        self.inner, self.seen = inner, seen
        for key in ("spatial_dims", "in_channels", "embed_dim", "feature_channels", "paths", "in_channels_by_path"):
            if hasattr(inner, key):
                setattr(self, key, getattr(inner, key))

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)

    def forward_intermediates(self, x):
        self.seen.append(x.detach().clone())
        return self.inner.forward_intermediates(x)


def _checkpoint(tmp_path, backbone_cfg, normalisation, patch_size):
    bb = dict(backbone_cfg)
    torch.manual_seed(0)
    enc = BACKBONES.build(bb.pop("name"), **bb)
    cfg = {"method": {"name": "pretrained"}, "backbone": dict(backbone_cfg)}
    return save_release(tmp_path / "final.safetensors", _Holder(enc), cfg,
                        {"normalisation": normalisation, "patch_size": list(patch_size)})


def _record(spec, seen):
    build = spec.build
    spec.build = lambda seed: Recorder(build(seed), seen)
    return spec


def _settings(**kw):
    return EvalSettings(seeds=(0,), label_fraction=1.0, feature_mode="crop", finetune_classification=False, n_boot=10, **kw)


@pytest.fixture
def ct_cohort():
    """Constant 8^3 volumes (cache values in [0, 1]) with a centre label, two severity classes."""
    levels = np.linspace(0.05, 0.6, 8).astype(np.float32)
    imgs = {f"c{j}": np.full((8, 8, 8), v, np.float32) for j, v in enumerate(levels)}
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 2:6, 2:6] = 1
    meta = {f"c{j}": {"severity": j % 2} for j in range(8)}
    return memory_data(imgs, labels={k: lab for k in imgs}, meta=meta, normalization=CACHE), levels


def test_checkpoint_and_its_random_row_get_hu_over_1024(tmp_path, ct_cohort):
    data, levels = ct_cohort
    spec = from_checkpoint(_checkpoint(tmp_path, RESNET, {"kind": "hu_scale", "divisor": 1024.0}, (8, 8, 8)))
    assert spec.meta["checkpoint"] == str(tmp_path / "final.safetensors")
    expected = sorted((-1024.0 + levels.astype(np.float64) * 4095.0) / 1024.0)
    seen: list = []
    rows = evaluate_models([_record(spec, seen)], ["classification"], data, _settings(), out=tmp_path / "o",
                           add_random_baseline=False)["rows"]
    assert rows and len(seen) >= 1
    fed = torch.cat(seen)  # [8, 1, 8, 8, 8]: one constant crop per case
    assert fed.shape == (8, 1, 8, 8, 8)
    np.testing.assert_allclose(sorted(fed.flatten(1).mean(1).double().numpy()), expected, rtol=1e-5, atol=1e-5)
    assert float(fed.flatten(1).std(1).max()) < 1e-6
    # the random-initialisation row reads the same values
    base = baseline_for(spec)
    assert base.normalisation == spec.normalisation and not base.pretrained
    enc = base.encoder(0, data)
    assert isinstance(enc, InputAdapter)
    x = torch.from_numpy(data.image("c3"))[None, None]
    torch.testing.assert_close(enc.prepare(x), (-1024.0 + x * 4095.0) / 1024.0)
    text = (tmp_path / "o" / "results.md").read_text()
    assert "HU / 1024 (hu_scale), converted from HU window [-1024, 3071]" in text


def test_segmentation_fine_tuning_and_inference_see_converted_values(tmp_path, ct_cohort):
    data, levels = ct_cohort
    drasclr = {"kind": "hu_clip_scale", "window": [-1024.0, 240.0], "offset": 1024.0, "divisor": 632.0, "shift": -1.0}
    spec = from_checkpoint(_checkpoint(tmp_path, RESNET, drasclr, (8, 8, 8)))
    seen: list = []
    s = _settings()
    s.seg.steps, s.seg.batch_size = 2, 2
    s.seg.augment, s.seg.patch = False, "checkpoint"  # augmentation moves values off the levels on purpose
    evaluate_models([_record(spec, seen)], ["segmentation"], data, s, out=tmp_path / "o", add_random_baseline=False)
    # cache value 0 is the padding value (and the decoder's one stride probe of zeros): converted like the rest
    allowed = (np.clip(-1024.0 + np.r_[0.0, levels.astype(np.float64)] * 4095.0, -1024, 240) + 1024) / 632 - 1
    vals = torch.cat([t.flatten() for t in seen]).double().unique().numpy()
    assert len(seen) >= 3  # two training steps, then inference
    assert all(np.abs(allowed - v).min() < 1e-5 for v in vals), vals


def test_raw_cache_checkpoint_is_left_alone(tmp_path, ct_cohort):
    data, _ = ct_cohort
    spec = from_checkpoint(_checkpoint(tmp_path, RESNET, dict(CACHE), (8, 8, 8)))
    enc = spec.encoder(0, data)
    assert not isinstance(enc, InputAdapter)  # the same scaling: nothing converts


@pytest.fixture
def xray_cohort():
    rng = np.random.default_rng(0)
    imgs = {f"x{j}": rng.uniform(0, 1, size=(64, 64)).astype(np.float32) for j in range(8)}
    meta = {f"x{j}": {"severity": j % 2} for j in range(8)}
    return memory_data(imgs, meta=meta, normalization={"kind": "minmax", "min": 0.0, "max": 255.0})


def test_two_path_mit_checkpoint_runs_on_xrays_with_grey_repeated(tmp_path, xray_cohort):
    mit = {"name": "mit_tiny", "img_size_2d": 64, "img_size_3d": [16, 64, 64], "with_decoder": False}
    norm = {"kind": "hu_scale", "divisor": 1024.0, "modality": "ct", "xray": {"kind": "minmax", "min": 0.0, "max": 1.0}}
    path = _checkpoint(tmp_path, mit, norm, (16, 64, 64))  # 2D patch: its in-plane size
    spec = from_checkpoint(path)
    assert spec.spatial_dims == 3 and spec.dims_supported() == (2, 3) and spec.channels(2) == 3
    seen: list = []
    result = evaluate_models([_record(spec, seen)], ["classification"], xray_cohort, _settings(), out=tmp_path / "o",
                             add_random_baseline=True)
    models = {r["model"] for r in result["rows"]}
    assert models == {"pretrained", "random-init"}
    fed = torch.cat(seen)
    assert fed.shape == (8, 3, 64, 64)
    got = sorted(fed[:, 0].flatten(1).sum(1).tolist())
    want = sorted(float(xray_cohort.image(i).sum()) for i in xray_cohort.ids)  # X-rays as cached: no HU scaling
    np.testing.assert_allclose(got, want, rtol=1e-5)
    torch.testing.assert_close(fed[:, 1], fed[:, 0])
    torch.testing.assert_close(fed[:, 2], fed[:, 0])
    assert "2D, grey x3" in (tmp_path / "o" / "results.md").read_text()


def test_one_path_backbone_is_still_refused_on_xrays(tmp_path, xray_cohort):
    spec = random_init("resnet", backbone_kwargs={k: v for k, v in RESNET.items() if k != "name"}, patch_size=(8, 8, 8))
    with pytest.raises(CheckpointError, match="3D encoder does not fit 2D data"):
        evaluate_models([spec], ["classification"], xray_cohort, _settings(), out=tmp_path / "o")


def test_hu_checkpoint_on_data_without_a_recorded_scaling_is_refused(tmp_path, ct_cohort):
    data, _ = ct_cohort
    bare = memory_data({i: data.image(i) for i in data.ids}, meta=data.meta)
    spec = from_checkpoint(_checkpoint(tmp_path, RESNET, {"kind": "hu_scale", "divisor": 1024.0}, (8, 8, 8)))
    with pytest.raises(CheckpointError, match="records no normalisation"):
        evaluate_models([spec], ["classification"], bare, _settings(), out=tmp_path / "o")


def test_tasks_declare_their_headline_metric_and_are_registered():
    names = TASKS.names()
    for task, metric in {"mit_segmentation": "mean_dice", "report_retrieval": "a2b_R@5", "zero_shot": "auc",
                         "classification": "auc", "segmentation": "mean_dice"}.items():
        assert task in names
        assert PRIMARY_METRIC[task] == metric == primary_metric(task)
    assert primary_metric("label_efficiency-regression") == "r2"


def test_patch_size_for_each_path_of_a_recorded_checkpoint():
    from medssl.eval.models import DEFAULT_PATCH, patch_for_dims

    # a slice encoder pretrained on 2D slices, evaluated on volumes: default depth, the recorded plane
    assert patch_for_dims({"patch_size": [24, 40]}, 3) == (DEFAULT_PATCH[3][0], 24, 40)
    assert patch_for_dims({"patch_size": [16, 32, 48]}, 3) == (16, 32, 48)
    # a 3D-pretrained two-path encoder on X-rays: the in-plane size of the 3D patch
    assert patch_for_dims({"patch_size": [16, 32, 48]}, 2) == (32, 48)
    assert patch_for_dims({}, 2, patch_size=[20, 20]) == (20, 20)
