"""X-ray physics for DRRs: HU -> linear attenuation, Beer-Lambert, noise, display windowing.

Attenuation model (monoenergetic, bilinear in HU): air, water and cortical
bone anchor the map at HU -1000, 0 and +1000,

    mu(HU) = mu_air + (mu_water - mu_air) * (1 + HU / 1000)    for HU <= 0
    mu(HU) = mu_water + (mu_bone - mu_water) * HU / 1000        for HU > 0

in 1/mm, clipped at 0. The mass attenuation coefficients (cm^2/g) versus
photon energy are rounded values of the NIST XCOM / Hubbell & Seltzer
tables (NISTIR 5632, 1995) for water, dry air and ICRU cortical bone
(1.92 g/cm^3); between tabulated energies they are interpolated log-log.
A monoenergetic model ignores beam hardening; the effective energy of a
chest radiograph at 120 kVp is around 60-70 keV.

Intensity follows Beer-Lambert, ``I = I0 exp(-integral mu dl)``; quantum
noise draws photon counts ``N ~ Poisson(I0 exp(-p))`` per pixel.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

ENERGIES_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
MASS_ATT_WATER = np.array([0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505])
MASS_ATT_AIR = np.array([0.7779, 0.3538, 0.2485, 0.2080, 0.1875, 0.1662, 0.1541, 0.1356])
MASS_ATT_BONE = np.array([4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480])
DENSITY_G_CM3 = {"water": 1.0, "air": 0.001205, "bone": 1.92}


def attenuation_coefficients(energy_kev: float = 60.0) -> Tuple[float, float, float]:
    """Linear attenuation (1/mm) of air, water and cortical bone at ``energy_kev``."""
    e = float(energy_kev)
    if not (np.isfinite(e) and ENERGIES_KEV[0] <= e <= ENERGIES_KEV[-1]):
        raise ValueError(f"energy_kev: must lie in [{ENERGIES_KEV[0]:g}, {ENERGIES_KEV[-1]:g}] keV, got {energy_kev}")

    def interp(table: np.ndarray) -> float:
        return float(np.exp(np.interp(np.log(e), np.log(ENERGIES_KEV), np.log(table))))

    # cm^2/g * g/cm^3 = 1/cm; / 10 -> 1/mm
    mu_air = interp(MASS_ATT_AIR) * DENSITY_G_CM3["air"] / 10.0
    mu_water = interp(MASS_ATT_WATER) * DENSITY_G_CM3["water"] / 10.0
    mu_bone = interp(MASS_ATT_BONE) * DENSITY_G_CM3["bone"] / 10.0
    return mu_air, mu_water, mu_bone


def hu_to_mu(hu: np.ndarray, energy_kev: float = 60.0, *, bone_scale: float = 1.0) -> np.ndarray:
    """Linear attenuation in 1/mm (float32, same shape) from Hounsfield units.

    ``bone_scale`` multiplies the bone-water contrast (augmentation of the
    bone model); 1.0 is the tabulated value.
    """
    mu_air, mu_water, mu_bone = attenuation_coefficients(energy_kev)
    h = np.asarray(hu, dtype=np.float32)
    soft = mu_air + (mu_water - mu_air) * (1.0 + h / 1000.0)
    hard = mu_water + bone_scale * (mu_bone - mu_water) * (h / 1000.0)
    return np.maximum(np.where(h <= 0, soft, hard), 0.0).astype(np.float32)


def mu_map(energy_kev: float = 60.0, *, bone_scale: float = 1.0, hu_offset: float = 0.0,
           hu_scale: float = 1.0) -> Tuple[float, float, float, float, float]:
    """:func:`hu_to_mu` as the kernels' value map of stored values ``v`` with ``HU = hu_offset + hu_scale * v``.

    Returns ``(a, b, low, c, kink)`` with ``mu = a + b max(v, low) + c max(v, kink)``
    (pass as ``value_map`` to :meth:`medssl.drr.Projector.line_integrals`): the
    soft-tissue line below the kink at HU 0, the bone line above it, and the
    clip at zero attenuation as ``low``. A cache window ``(lo, hi)`` is
    ``hu_offset=lo, hu_scale=hi - lo``; HU / 1024 is ``hu_scale=1024``.
    """
    if not (np.isfinite(hu_scale) and hu_scale > 0):
        raise ValueError(f"hu_scale: must be a positive number of HU per stored unit, got {hu_scale}")
    if not np.isfinite(hu_offset):
        raise ValueError(f"hu_offset: must be finite, got {hu_offset}")
    if not (np.isfinite(bone_scale) and bone_scale >= 0):
        raise ValueError(f"bone_scale: must be a non-negative multiplier, got {bone_scale}")
    mu_air, mu_water, mu_bone = attenuation_coefficients(energy_kev)
    soft = (mu_water - mu_air) / 1000.0 * hu_scale  # d mu / d v below the kink
    hard = bone_scale * (mu_bone - mu_water) / 1000.0 * hu_scale  # d mu / d v above it
    kink = -hu_offset / hu_scale  # HU 0
    low = kink - mu_water / soft  # soft-tissue line reaches mu = 0
    c = hard - soft
    a = mu_water - soft * kink - c * kink
    return (float(a), float(soft), float(low), float(c), float(kink))


def beer_lambert(line_integral: np.ndarray, i0: float = 1.0) -> np.ndarray:
    """Transmitted intensity ``I0 * exp(-line_integral)``."""
    if not (np.isfinite(i0) and i0 > 0):
        raise ValueError(f"i0: must be a positive intensity, got {i0}")
    return i0 * np.exp(-np.asarray(line_integral, dtype=np.float64))


def poisson_counts(line_integral: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Photon counts ``Poisson(photons * exp(-p))`` per pixel (float64), seeded by ``rng``."""
    if not (np.isfinite(photons) and photons > 0):
        raise ValueError(f"photons: must be a positive photon count, got {photons}")
    return rng.poisson(beer_lambert(line_integral, photons)).astype(np.float64)


def noisy_line_integral(line_integral: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Line integrals re-estimated from Poisson counts: ``-log(max(N, 0.5) / photons)``."""
    counts = poisson_counts(line_integral, photons, rng)
    return -np.log(np.maximum(counts, 0.5) / photons)


def window(image: np.ndarray, *, low: Optional[float] = None, high: Optional[float] = None,
           percentiles: Tuple[float, float] = (0.5, 99.5), bits: Optional[int] = 8,
           invert: bool = False) -> np.ndarray:
    """Map an image (e.g. line integrals: bone bright) to [0, 1] or to 8/16-bit integers.

    ``low``/``high`` fix the window; when absent they are the ``percentiles``
    of the image. ``bits=None`` returns float32 in [0, 1]; 8 -> uint8, 16 -> uint16.
    ``invert`` flips it (e.g. to show transmitted intensity with air bright).
    """
    a = np.asarray(image, dtype=np.float64)
    if bits not in (None, 8, 16):
        raise ValueError(f"bits: must be 8, 16 or None, got {bits}")
    if low is None and high is None:  # both percentiles from one partition of the image
        lo, hi = (float(x) for x in np.percentile(a, [percentiles[0], percentiles[1]]))
    else:
        lo = float(np.percentile(a, percentiles[0])) if low is None else float(low)
        hi = float(np.percentile(a, percentiles[1])) if high is None else float(high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("low/high: window bounds must be finite")
    scaled = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)
    if invert:
        scaled = 1.0 - scaled
    if bits is None:
        return scaled.astype(np.float32)
    top = 255 if bits == 8 else 65535
    return np.round(scaled * top).astype(np.uint8 if bits == 8 else np.uint16)
