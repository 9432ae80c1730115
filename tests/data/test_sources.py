"""Cache sources: shapes and dtypes, content equal to the cache, seeded determinism, loaders."""

import numpy as np
import pytest
import torch

from medssl.data import ImageSource, PatchSource, SliceSource, batch_to, make_loader
from medssl.preprocess import Cache, preprocess_manifest
from medssl.registry import SOURCES


@pytest.fixture(scope="module")
def cache(tmp_path_factory, cohort):
    root = tmp_path_factory.mktemp("src")
    recs = []
    for i in range(3):
        hu, lab = cohort.phantom_ct((22, 20, 18), seed=i)
        recs.append(cohort.add_volume(root, f"v{i}", hu, cohort.diag_affine((1, 1, 1)), label=lab,
                                      split="train" if i < 2 else "val"))
    rng = np.random.default_rng(1)
    recs.append(cohort.add_xray(root, "x0", rng.uniform(size=(30, 24))))
    recs.append(cohort.add_xray(root, "x1", rng.uniform(size=(26, 20))))
    manifest = cohort.write_manifest(root, recs)
    preprocess_manifest(manifest, root / "cache", spacing=(1, 1, 1), crop_margin_mm=40, progress=False)
    return Cache(root / "cache")


def unflip(arr, flipped, axes):
    for axis, hit in zip(axes, flipped):
        if hit:
            arr = np.flip(arr, axis)
    return arr


def test_registered():
    assert {"patches", "slices", "xrays"} <= set(SOURCES.names())
    assert SOURCES.get("patches") is PatchSource


def test_patches_match_the_cache(cache):
    src = PatchSource(cache, patch_size=(8, 10, 6), patches_per_volume=4, with_label=True, flip_prob=0.5, seed=3)
    assert len(src) == 12 and src.ids == ["v0", "v1", "v2"]
    n_flipped = 0
    for key in range(len(src)):
        item = src[key]
        assert item["image"].shape == (1, 8, 10, 6) and item["image"].dtype == torch.float16
        assert item["label"].shape == (1, 8, 10, 6) and item["label"].dtype == torch.uint8
        assert item["id"] == src.ids[key // 4]
        z, y, x = item["meta"]["start"].tolist()
        flipped = item["meta"]["flipped"].tolist()
        n_flipped += sum(flipped)
        ref = np.asarray(cache.image(item["id"]))[z:z + 8, y:y + 10, x:x + 6]
        np.testing.assert_array_equal(unflip(item["image"][0].numpy(), flipped, (0, 1, 2)), ref)
        lab = np.asarray(cache.label(item["id"]))[z:z + 8, y:y + 10, x:x + 6]
        np.testing.assert_array_equal(unflip(item["label"][0].numpy(), flipped, (0, 1, 2)), lab)
    assert 0 < n_flipped < 36


def test_patches_are_deterministic_for_a_seed(cache):
    a = PatchSource(cache, patch_size=(6, 6, 6), patches_per_volume=3, flip_prob=0.5, seed=7)
    b = PatchSource(cache, patch_size=(6, 6, 6), patches_per_volume=3, flip_prob=0.5, seed=7)
    c = PatchSource(cache, patch_size=(6, 6, 6), patches_per_volume=3, flip_prob=0.5, seed=8)
    starts = lambda s, keys: [s[k]["meta"]["start"].tolist() for k in keys]  # noqa: E731
    keys = list(range(9))
    assert starts(a, keys) == starts(b, keys)
    assert starts(a, keys) != starts(c, keys)
    assert starts(a, [9 + k for k in keys]) != starts(a, keys)  # next epoch, new draws
    for k in keys:
        assert torch.equal(a[k]["image"], b[k]["image"])


def test_foreground_sampling_hits_the_label(cache):
    src = PatchSource(cache, patch_size=(4, 4, 4), patches_per_volume=10, with_label=True, foreground_prob=1.0)
    hits = [int((src[k]["label"] > 0).any()) for k in range(len(src))]
    assert sum(hits) == len(src)


def test_small_volume_is_padded(cache):
    shape = cache.image("v0").shape
    src = PatchSource(cache, patch_size=(shape[0] + 3, 4, 4), ids=["v0"])
    img = src[0]["image"][0].numpy()
    assert img.shape == (shape[0] + 3, 4, 4) and np.all(img[shape[0]:] == 0)


def test_loader_same_batches_with_and_without_workers(cache):
    src = PatchSource(cache, patch_size=(6, 6, 6), patches_per_volume=2, flip_prob=0.5, seed=1, split="train")
    assert src.ids == ["v0", "v1"]
    batches = []
    for workers in (0, 2):
        loader = make_loader(src, batch_size=3, workers=workers, seed=5)
        loader.sampler.set_epoch(1)
        batches.append([(b["id"], b["image"]) for b in loader])
    for (ida, xa), (idb, xb) in zip(*batches):
        assert ida == idb and torch.equal(xa, xb)
    batch = batch_to(next(iter(make_loader(src, batch_size=4, workers=0))))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 1, 6, 6, 6)
    assert batch["meta"]["start"].dtype == torch.int64


def test_slices(cache):
    src = SliceSource(cache, size=(12, 16), with_label=True, flip_prob=0.5, stride=2, seed=2)
    depths = [cache.image(i).shape[0] for i in src.ids]
    assert len(src) == sum((d + 1) // 2 for d in depths)
    for key in (0, 5, len(src) - 1):
        item = src[key]
        assert item["image"].shape == (1, 12, 16) and item["image"].dtype == torch.float16
        z, y, x = item["meta"]["start"].tolist()
        ref = np.asarray(cache.image(item["id"]))[z, y:y + 12, x:x + 16]
        got = unflip(item["image"][0].numpy(), item["meta"]["flipped"].tolist(), (0, 1))
        np.testing.assert_array_equal(got[:ref.shape[0], :ref.shape[1]], ref)
        assert item["label"].shape == (1, 12, 16)


def test_xray_images(cache):
    src = ImageSource(cache, size=(16, 16))
    assert src.ids == ["x0", "x1"]
    item = src[1]
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float16
    raw = ImageSource(cache, dtype="float32")[0]["image"]
    assert raw.shape == (1, 30, 24) and raw.dtype == torch.float32
    np.testing.assert_array_equal(raw[0].numpy(), np.asarray(cache.image("x0"), np.float32))
    assert float(raw.min()) == 0.0 and float(raw.max()) == 1.0


@pytest.mark.parametrize("kwargs, name", [({"patch_size": (0, 4, 4)}, "patch_size"), ({"flip_prob": 2.0}, "flip_prob"),
                                          ({"dtype": "int8"}, "dtype"), ({"split": "test"}, "ids"),
                                          ({"patches_per_volume": 0}, "patches_per_volume")])
def test_bad_arguments_name_themselves(cache, kwargs, name):
    with pytest.raises(ValueError, match=name):
        PatchSource(cache, **kwargs)


def test_patches_in_a_model_window_and_recorded(cache):
    """``normalisation``: patches are the cache's HU in the model's window, and the checkpoint meta records it."""
    from medssl.train.build import data_meta

    lung = {"kind": "ct_window", "window": [-1350.0, 150.0]}
    plain = PatchSource(cache, patch_size=(8, 8, 8), seed=2, dtype="float32")
    win = PatchSource(cache, patch_size=(8, 8, 8), seed=2, dtype="float32", normalisation=lung)
    spec = cache.meta("v0")["normalization"]
    assert spec["kind"] == "ct_window"
    lo, hi = spec["window"]
    for key in range(len(win)):
        a, b = plain[key]["image"].numpy(), win[key]["image"].numpy()
        hu = a * (hi - lo) + lo  # the cache's values back to HU, written out
        np.testing.assert_allclose(b, np.clip((hu + 1350.0) / 1500.0, 0.0, 1.0), atol=1e-5)
    assert data_meta(win)["normalisation"] == lung
    assert data_meta(plain)["normalisation"] == spec
    with pytest.raises(ValueError, match="normalisation"):
        PatchSource(cache, patch_size=(8, 8, 8), normalisation={"kind": "ct_window"})
