"""medssl.normalisation: each kind against its plain formula, round trips, aliases, conversions."""

import numpy as np
import pytest
import torch

from medssl import normalisation as N
from medssl.methods.unimiss_eval import to_model_range

CACHE = {"kind": "ct_window", "window": [-1024.0, 3071.0]}
UNIMISS = {"kind": "hu_scale", "divisor": 1024.0}
IMPORTED = {"kind": "ct_hu_scale", "divisor": 1024}
DRASCLR = {"kind": "hu_clip_scale", "window": [-1024.0, 240.0], "offset": 1024.0, "divisor": 632.0, "shift": -1.0}


@pytest.fixture
def hu():
    return np.random.default_rng(0).uniform(-1500, 3500, size=(4, 5, 6)).astype(np.float32)


def test_from_hu_matches_the_plain_formulas(hu):
    np.testing.assert_allclose(N.from_hu(hu, CACHE), (np.clip(hu, -1024, 3071) + 1024) / 4095, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(N.from_hu(hu, UNIMISS), hu / 1024, rtol=1e-6)
    np.testing.assert_allclose(N.from_hu(hu, DRASCLR), (np.clip(hu, -1024, 240) + 1024) / 632 - 1, rtol=1e-6, atol=1e-6)
    t = torch.from_numpy(hu)
    torch.testing.assert_close(N.from_hu(t, DRASCLR), (t.clamp(-1024, 240) + 1024) / 632 - 1)  # tensors stay tensors


def test_round_trips_inside_the_window(hu):
    for spec, (lo, hi) in ((CACHE, (-1024, 3071)), (UNIMISS, (-1e9, 1e9)), (DRASCLR, (-1024, 240))):
        inside = np.clip(hu, lo, hi)
        np.testing.assert_allclose(N.to_hu(N.from_hu(hu, spec), spec), inside, atol=2e-3)
    x = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(N.to_hu(x, CACHE), -1024 + 4095 * x, rtol=1e-6)


def test_alias_reads_as_the_canonical_kind(hu):
    assert N.canonical_kind("ct_hu_scale") == "hu_scale" and N.same(IMPORTED, UNIMISS)
    np.testing.assert_array_equal(N.from_hu(hu, IMPORTED), N.from_hu(hu, UNIMISS))
    with pytest.raises(ValueError, match="unknown normalisation kind 'hu_log'"):
        N.check({"kind": "hu_log"})
    with pytest.raises(ValueError, match="needs divisor"):
        N.make_spec("hu_scale")


def test_convert_cache_values_to_each_model_range():
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 8)).astype(np.float32)
    hu = -1024.0 + 4095.0 * x
    np.testing.assert_allclose(N.convert(x, CACHE, UNIMISS), hu / 1024, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(N.convert(x, CACHE, DRASCLR), (np.clip(hu, -1024, 240) + 1024) / 632 - 1, atol=1e-5)
    other = {"kind": "ct_window", "window": [-1000.0, 1000.0]}
    np.testing.assert_allclose(N.convert(x, CACHE, other), (np.clip(hu, -1000, 1000) + 1000) / 2000, atol=1e-6)
    assert N.convert(x, CACHE, None) is x and N.convert(x, CACHE, dict(CACHE)) is x
    assert N.convert(x, {"kind": "minmax", "min": 3.0, "max": 9.0}, {"kind": "minmax", "min": 0.0, "max": 1.0}) is x
    with pytest.raises(ValueError, match="cannot convert"):
        N.convert(x, {"kind": "zscore", "mean": 0.0, "std": 1.0}, {"kind": "minmax", "min": 0.0, "max": 1.0})
    with pytest.raises(ValueError, match="records no normalisation"):
        N.convert(x, None, UNIMISS)


def test_for_modality_picks_the_recorded_sub_spec():
    spec = {"kind": "hu_scale", "divisor": 1024.0, "modality": "ct", "xray": {"kind": "minmax", "min": 0.0, "max": 1.0}}
    assert N.for_modality(spec, "xray") == {"kind": "minmax", "min": 0.0, "max": 1.0}
    assert N.for_modality(spec, "ct") == {"kind": "hu_scale", "divisor": 1024.0, "modality": "ct"}
    assert "HU / 1024" in N.describe(spec) and "632" in N.describe(DRASCLR)


def test_mit_seg_to_model_range_keeps_its_formula_and_reads_the_alias():
    x = np.random.default_rng(2).uniform(0, 1, size=(2, 4, 4)).astype(np.float32)
    want = (-1024.0 + x * 4095.0) / 1024.0
    np.testing.assert_allclose(to_model_range(x, UNIMISS), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_model_range(x, IMPORTED), want, rtol=1e-6, atol=1e-7)
    assert to_model_range(x, None) is x and to_model_range(x, {"kind": "minmax", "min": 0, "max": 1}) is x
