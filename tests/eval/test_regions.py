"""Region feature modes: windows inside the body or the lungs, masks from HU."""

import numpy as np
import pytest
import torch

from medssl.errors import DataError
from medssl.eval.data import load_eval_data, memory_data
from medssl.eval.features import REGION_MIN_FRACTION, extract_features, prepare, sliding_patches
from medssl.eval.regions import body_mask, case_region, region_mask


def _chest(shape=(24, 40, 40), seed=0):
    """A chest phantom in HU: air around an elliptic body (+40 HU) holding two lungs (-850 HU)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    hu = np.full(shape, -1000.0)
    body = ((y - 20) / 16.0) ** 2 + ((x - 20) / 18.0) ** 2 <= 1.0
    hu[body] = 40.0
    for cx in (12, 28):
        lung = (((y - 20) / 9.0) ** 2 + ((x - cx) / 6.0) ** 2 <= 1.0) & (z > 2) & (z < shape[0] - 3)
        hu[lung] = -850.0
    return hu + rng.normal(0, 5, size=shape), body


def test_prepare_keeps_exactly_the_windows_mostly_inside_the_region():
    img = np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16)
    region = np.zeros(img.shape, bool)
    region[:8, :8, :8] = True          # all of one 8^3 window
    region[8:10, 8:16, 8:16] = True    # a quarter of another: kept (>= REGION_MIN_FRACTION)
    region[8:9, :8, :8] = True         # an eighth of a third: left out
    all_windows = sliding_patches(torch.from_numpy(img)[None], (8, 8, 8))
    got = prepare(img, (8, 8, 8), "body", region)
    share = sliding_patches(torch.from_numpy(region.astype(np.float32))[None], (8, 8, 8)).flatten(1).mean(1)
    want = all_windows[share >= REGION_MIN_FRACTION]
    assert REGION_MIN_FRACTION == 0.25 and got.shape[0] == 2 and torch.equal(got, want)
    # no window inside: the one most inside stands in, never an empty case
    tiny = np.zeros(img.shape, bool)
    tiny[15, 15, 15] = True
    assert torch.equal(prepare(img, (8, 8, 8), "lungs", tiny), all_windows[-1:])
    with pytest.raises(ValueError, match="needs the case's mask"):
        prepare(img, (8, 8, 8), "lungs")
    with pytest.raises(ValueError, match="mask of shape"):
        prepare(img, (8, 8, 8), "lungs", region[:8])


def test_region_features_are_the_mean_over_the_kept_windows():
    img = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    region = np.zeros(img.shape, bool)
    region[:8] = True  # the four upper windows
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 ** 3, 3))
    got = extract_features(enc, [img], patch_size=(8, 8, 8), mode="body", regions=[region], batch_size=3)
    with torch.no_grad():
        want = enc(sliding_patches(torch.from_numpy(img)[None], (8, 8, 8))[:4]).mean(0).numpy()
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_body_and_lung_masks_of_a_phantom():
    hu, body = _chest()
    got = body_mask(hu)
    assert np.array_equal(got, body)  # the lungs inside the chest belong to the body, the air around does not
    lungs = region_mask(hu, "lungs", (4.0, 4.0, 4.0))
    truth = (hu < -500) & body
    inter = np.logical_and(lungs, truth).sum()
    assert 2 * inter / (lungs.sum() + truth.sum()) > 0.9 and not lungs[~body].any()
    with pytest.raises(ValueError, match="region"):
        region_mask(hu, "heart")


def test_case_region_reads_hu_through_the_cache_window_and_refuses_unscaled_data():
    hu, body = _chest()
    window = {"kind": "ct_window", "window": [-1024.0, 3071.0]}
    scaled = ((hu + 1024.0) / 4095.0).astype(np.float32)
    data = memory_data({"a": scaled}, meta={"a": {}})
    data.normalization = {"a": window}
    assert np.array_equal(case_region(data, "a", "body"), body)
    assert ("a", "body") in data.regions  # computed once
    bare = memory_data({"a": scaled}, meta={"a": {}})
    with pytest.raises(DataError, match="Hounsfield"):
        case_region(bare, "a", "lungs")


def test_lung_windows_on_the_synthetic_cohort(tiny_cohort):
    manifest, cache = tiny_cohort
    data = load_eval_data(manifest, cache=cache, spatial_dims=3)
    cid = data.ids[0]
    lungs, body = case_region(data, cid, "lungs"), case_region(data, cid, "body")
    assert lungs.any() and body.sum() > lungs.sum() and not (lungs & ~body).any()
    labels = data.label(cid)
    names = [n.lower() for n in (data.label_names or [])]
    if labels is not None and "lung_left" in names:  # the cohort's organ labels locate the lungs
        truth = np.isin(labels, [names.index("lung_left"), names.index("lung_right")])
        assert 2 * (lungs & truth).sum() / (lungs.sum() + truth.sum()) > 0.8
    n_all = prepare(data.image(cid), (8, 8, 8), "sliding").shape[0]
    n_lung = prepare(data.image(cid), (8, 8, 8), "lungs", lungs).shape[0]
    assert 0 < n_lung < n_all
