"""View generators: seeding, shapes, and augmentations against plain re-derivations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medssl.views import (
    MaskedView, MultiCrop, RandomFlip, RandomResizedCrop, TwoViews, block_mask, default_augment, gaussian_blur,
)
from medssl.views.intensity import BrightnessContrast, Gamma


def _sample(sd: int):
    img = torch.rand(1, *([20] * sd), generator=torch.Generator().manual_seed(0))
    return {"image": img.half(), "id": "case0"}


@pytest.mark.parametrize("sd", [2, 3])
def test_two_views_are_seeded_float32_and_sized(sd):
    gen = TwoViews(default_augment(12), spatial_dims=sd)
    a = gen(_sample(sd), np.random.default_rng(5))
    b = gen(_sample(sd), np.random.default_rng(5))
    c = gen(_sample(sd), np.random.default_rng(6))
    assert a["view1"].dtype == torch.float32 and tuple(a["view1"].shape) == (1,) + (12,) * sd
    assert torch.equal(a["view1"], b["view1"]) and torch.equal(a["view2"], b["view2"])
    assert not torch.equal(a["view1"], a["view2"]) and not torch.equal(a["view1"], c["view1"])


def test_multicrop_counts_and_sizes():
    out = MultiCrop(16, 8, n_global=2, n_local=3)(_sample(3), np.random.default_rng(0))
    assert [tuple(v.shape) for v in out["global_views"]] == [(1, 16, 16, 16)] * 2
    assert [tuple(v.shape) for v in out["local_views"]] == [(1, 8, 8, 8)] * 3


def test_full_crop_without_aspect_change_is_the_identity():
    img = torch.rand(1, 6, 7, 8)
    out = RandomResizedCrop((6, 7, 8), scale=(1.0, 1.0), ratio=(1.0, 1.0))(img, np.random.default_rng(0))
    torch.testing.assert_close(out, img)


def test_crop_box_is_inside_and_has_the_drawn_volume():
    crop = RandomResizedCrop(4, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    box = crop._box((16, 16, 16), np.random.default_rng(1))
    assert all(0 <= a and a + n <= 16 for a, n in box)
    assert np.prod([n for _, n in box]) == pytest.approx(0.25 * 16**3, rel=0.2)


def test_flip_with_p1_reverses_every_axis():
    img = torch.arange(24.0).reshape(1, 2, 3, 4)
    out = RandomFlip(p=1.0)(img, np.random.default_rng(0))
    assert torch.equal(out, torch.from_numpy(img.numpy()[:, ::-1, ::-1, ::-1].copy()))


@pytest.mark.parametrize("sd", [2, 3])
def test_blur_matches_scipy(sd):
    img = torch.rand(1, *([12] * sd), generator=torch.Generator().manual_seed(3))
    ours = gaussian_blur(img, sigma=1.2)[0].double().numpy()
    ref = ndimage.gaussian_filter(img[0].double().numpy(), sigma=1.2, mode="nearest", truncate=3.0)
    # scipy's radius is int(3 * sigma + 0.5) = 4; ours ceil(3 * sigma) = 4: the same kernel
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_brightness_contrast_and_gamma_formulas():
    img = torch.rand(1, 5, 5)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    out = BrightnessContrast(0.1, 0.2)(img, rng_a)
    c, b = rng_b.uniform(0.8, 1.2), rng_b.uniform(-0.1, 0.1)
    torch.testing.assert_close(out, (img - img.mean()) * c + img.mean() + b)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    g = rng_b.uniform(0.7, 1.5)
    lo, hi = img.min(), img.max()
    torch.testing.assert_close(Gamma()(img, rng_a), ((img - lo) / (hi - lo)) ** g * (hi - lo) + lo)


@pytest.mark.parametrize("grid,ratio,blocks", [((4, 4, 4), 0.75, (1, 1)), ((6, 6), 0.4, (2, 3)), ((3, 5, 4), 0.5, (1, 3))])
def test_block_mask_has_the_exact_count(grid, ratio, blocks):
    for seed in range(5):
        m = block_mask(grid, ratio, np.random.default_rng(seed), *blocks)
        assert m.shape == grid and m.dtype == bool
        assert m.sum() == round(ratio * np.prod(grid))


def test_masked_view_mask_fits_the_patch_grid():
    out = MaskedView(RandomResizedCrop(16), patch_size=4, mask_ratio=0.75)(_sample(3), np.random.default_rng(0))
    assert tuple(out["mask"].shape) == (4, 4, 4) and int(out["mask"].sum()) == 48


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), "scale"),
        (lambda: RandomFlip(p=2.0), "p"),
        (lambda: MaskedView(RandomFlip(), 4, mask_ratio=1.0), "mask ratio"),
        (lambda: MultiCrop(8, 4, n_global=0), "n_global"),
        (lambda: TwoViews(RandomFlip(), spatial_dims=2)({"image": torch.zeros(1, 4, 4, 4)}, np.random.default_rng(0)), "2D"),
    ],
)
def test_bad_arguments_name_the_argument(build, word):
    with pytest.raises(ValueError, match=word):
        build()


def test_augment_strength_bounds_the_intensity_change():
    """``augment`` settings reach the chain: with HU-sized jitter a flat CT patch moves by at most the set amounts."""
    from medssl.views import default_augment

    img = torch.full((1, 12, 12, 12), 0.04)  # lung parenchyma, about -860 HU on the [-1024, 3071] -> [0, 1] scale
    rng = np.random.default_rng(0)
    strong = [default_augment(8, scale=(1.0, 1.0), p_blur=0.0)(img, rng) for _ in range(40)]
    weak = [default_augment(8, scale=(1.0, 1.0), p_blur=0.0, brightness=0.005, contrast=0.05, p_gamma=0.0,
                            noise_std=(0.0, 0.002))(img, rng) for _ in range(40)]
    shift = lambda views: max(float((v.mean() - 0.04).abs()) for v in views)  # noqa: E731
    assert shift(strong) > 0.05  # the default jitter moves a patch by more than the whole lung range
    assert shift(weak) <= 0.005 + 1e-3
    assert max(float(v.std()) for v in weak) <= 0.0025


def test_augment_settings_name_the_bad_key():
    from medssl.errors import ConfigError
    from medssl.views import augment_settings

    assert augment_settings({"noise_std": [0.0, 0.01]}) == {"noise_std": (0.0, 0.01)}
    with pytest.raises(ConfigError, match="unknown key.*bright"):
        augment_settings({"bright": 0.1})
    with pytest.raises(ConfigError, match="p_noise"):
        augment_settings({"p_noise": 1.5})
    with pytest.raises(ConfigError, match="mapping"):
        augment_settings([0.1])
