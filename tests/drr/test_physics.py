"""HU -> attenuation, Beer-Lambert, Poisson noise and windowing."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.drr import attenuation_coefficients, beer_lambert, hu_to_mu, noisy_line_integral, poisson_counts, window


def test_hu_anchors_and_nist_values():
    mu_air, mu_water, mu_bone = attenuation_coefficients(60.0)
    assert mu_water == pytest.approx(0.2059 / 10, rel=1e-9)  # NIST XCOM water, 60 keV, 1/mm
    assert mu_bone == pytest.approx(0.3148 * 1.92 / 10, rel=1e-9)
    mu = hu_to_mu(np.array([-1000.0, -500.0, 0.0, 500.0, 1000.0]), 60.0)
    expect = [mu_air, 0.5 * (mu_air + mu_water), mu_water, 0.5 * (mu_water + mu_bone), mu_bone]
    assert np.allclose(mu, expect, rtol=1e-6)
    assert hu_to_mu(np.array([-3000.0]))[0] == 0.0


def test_attenuation_falls_with_energy_and_is_loglog_between_table_points():
    w = [attenuation_coefficients(e)[1] for e in (30.0, 45.0, 60.0, 100.0)]
    assert all(a > b for a, b in zip(w, w[1:]))
    mid = attenuation_coefficients(np.sqrt(40.0 * 50.0))[1]
    assert mid == pytest.approx(np.sqrt(0.2683 * 0.2269) / 10, rel=1e-9)
    with pytest.raises(ValueError, match="energy_kev"):
        attenuation_coefficients(5.0)


def test_beer_lambert_and_poisson_noise():
    p = np.array([0.0, 1.0, 3.0])
    assert np.allclose(beer_lambert(p, 100.0), 100.0 * np.exp(-p))
    a = poisson_counts(np.full(20000, 1.0), 500.0, np.random.default_rng(7))
    b = poisson_counts(np.full(20000, 1.0), 500.0, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert a.mean() == pytest.approx(500 * np.exp(-1), rel=0.01)
    assert a.var() == pytest.approx(500 * np.exp(-1), rel=0.05)
    est = noisy_line_integral(np.full(20000, 1.0), 1e6, np.random.default_rng(0))
    assert est.mean() == pytest.approx(1.0, abs=1e-3) and est.std() > 0
    with pytest.raises(ValueError, match="photons"):
        poisson_counts(p, 0.0, np.random.default_rng(0))


def test_window_bits_and_fixed_window():
    img = np.linspace(0.0, 4.0, 101).reshape(1, 101)
    w8 = window(img, low=1.0, high=3.0, bits=8)
    assert w8.dtype == np.uint8 and w8[0, 0] == 0 and w8[0, -1] == 255 and w8[0, 50] == 128
    w16 = window(img, low=0.0, high=4.0, bits=16)
    assert w16.dtype == np.uint16 and w16[0, 25] == round(0.25 * 65535)
    f = window(img, low=0.0, high=4.0, bits=None, invert=True)
    assert f.dtype == np.float32 and f[0, 0] == 1.0 and f[0, -1] == 0.0
    with pytest.raises(ValueError, match="bits"):
        window(img, bits=12)
