"""Disease rendered into a normal chest: effusion, consolidation, emphysema, nodules.

Each function edits ``anatomy.hu`` / ``anatomy.organs`` in place and writes
its label into the lesion map. Order matters and is fixed in
:func:`apply_disease`: fluid displaces lung first, consolidation fills a lobe
region, emphysema destroys the remaining parenchyma, nodules are placed last
so that they are never overwritten.

Emphysema patterns follow the radiological subtypes (Fleischner Society
statement, Lynch et al., Radiology 2015): centrilobular = small lobular
lucencies, upper-zone predominant; paraseptal = subpleural lucencies and
bullae; panlobular = diffuse, lower-zone predominant low attenuation.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .anatomy import BODY, LUNG_L, LUNG_R, Anatomy
from .fields import smooth_noise
from .risk import LOBE_CODES

LESION_LABELS = {
    0: "none",
    1: "emphysema",
    2: "nodule solid",
    3: "nodule ground-glass",
    4: "consolidation",
    5: "pleural effusion",
}
EMPHYSEMA, NODULE_SOLID, NODULE_GGO, CONSOLIDATION, EFFUSION = range(1, 6)


def _lung(an: Anatomy) -> np.ndarray:
    return (an.organs == LUNG_L) | (an.organs == LUNG_R)


def _top_fraction(mask: np.ndarray, score: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of ``mask`` voxels with the highest ``score`` (boolean volume)."""
    out = np.zeros(mask.shape, bool)
    vals = score[mask]
    k = int(round(fraction * vals.size))
    if k <= 0:
        return out
    thr = np.partition(vals, vals.size - k)[vals.size - k]
    out[mask] = vals >= thr
    return out


def apply_effusion(rng: np.random.Generator, an: Anatomy, lesions: np.ndarray, side: str | None, fraction: float) -> None:
    """Dependent pleural fluid (+10 HU) replacing the posterior-basal ``fraction`` of a lung."""
    if side is None:
        return
    for lab, name in ((LUNG_L, "left"), (LUNG_R, "right")):
        if side not in (name, "both"):
            continue
        m = an.organs == lab
        fluid = _top_fraction(m, an.dependent + 1.2 * (1.0 - an.height), fraction)
        an.hu[fluid] = 10.0 + 4.0 * rng.standard_normal(int(fluid.sum())).astype(np.float32)
        an.organs[fluid] = BODY
        an.lobes[fluid] = 0
        lesions[fluid] = EFFUSION


def apply_consolidation(rng: np.random.Generator, an: Anatomy, lesions: np.ndarray, lobe: str | None) -> None:
    """Airspace consolidation (+20..+50 HU) over a smooth region of one lobe; airways stay dark
    (air bronchograms) because only parenchyma voxels are replaced."""
    if lobe is None:
        return
    m = (an.lobes == LOBE_CODES[lobe]) & _lung(an) & (lesions == 0)
    blob = smooth_noise(rng, an.hu.shape, scale=6.0)
    region = _top_fraction(m, blob - 1.5 * an.radial, rng.uniform(0.4, 0.8))
    level = rng.uniform(20.0, 50.0)
    an.hu[region] = (level + 8.0 * blob)[region]
    lesions[region] = CONSOLIDATION


def apply_emphysema(rng: np.random.Generator, an: Anatomy, lesions: np.ndarray, pattern: str, fraction: float) -> None:
    """Low-attenuation destruction (< -950 HU) over ``fraction`` of the remaining lung."""
    if pattern == "none" or fraction <= 0:
        return
    m = _lung(an) & (lesions == 0)
    shape = an.hu.shape
    fine = smooth_noise(rng, shape, scale=2.5)
    coarse = smooth_noise(rng, shape, scale=5.0)
    if pattern == "centrilobular":
        score = 0.7 * fine + coarse + 2.5 * an.height
        hu = -1000.0 + 4.0 * fine
    elif pattern == "paraseptal":
        score = 0.5 * fine + 0.5 * coarse + 5.0 * np.minimum(an.radial, 0.85) ** 4
        # a few subpleural bullae, selected first
        idx = np.argwhere(m & (an.radial > 0.85))
        for _ in range(int(rng.integers(1, 4))):
            if len(idx) == 0:
                break
            i, j, k = idx[int(rng.integers(len(idx)))]
            r = rng.uniform(6.0, 15.0) * max(an.grid.spacing) / 2.5
            d2 = ((an.grid.x - an.grid.x[i, 0, 0]) ** 2 + (an.grid.y - an.grid.y[0, j, 0]) ** 2
                  + (an.grid.z - an.grid.z[0, 0, k]) ** 2)
            score = np.where(d2 < r * r, score + 10.0, score)
        hu = -1000.0 + 3.0 * fine
    elif pattern == "panlobular":
        score = coarse + 2.5 * (1.0 - an.height)
        hu = -995.0 + 5.0 * coarse
    else:
        raise ValueError(f"pattern: unknown emphysema pattern '{pattern}'")
    region = _top_fraction(m, score, fraction)
    an.hu[region] = np.clip(hu, -1024.0, -985.0)[region]
    lesions[region] = EMPHYSEMA


def apply_nodules(rng: np.random.Generator, an: Anatomy, lesions: np.ndarray, nodules: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Place each nodule (lobe, diameter_mm, type) inside its lobe, apart from the others.

    Solid nodules are +30 HU, ground-glass -500 HU, with a partial-volume edge.
    A nodule that finds no room in its lobe (after 30 tries) is dropped.
    Returns the nodules actually placed, with ``center_mm`` added.
    """
    g = an.grid
    voxel = float(min(g.spacing))
    placed: List[Dict[str, Any]] = []
    for nod in nodules:
        r = nod["diameter_mm"] / 2.0
        axes = r * rng.uniform(0.88, 1.12, size=3)
        axes *= r / np.prod(axes) ** (1 / 3)  # mean diameter stays as drawn
        cand = np.argwhere((an.lobes == LOBE_CODES[nod["lobe"]]) & (lesions != CONSOLIDATION)
                           & (an.radial < 0.8) & (an.height > 0.1) & (an.height < 0.9))
        for _ in range(30 if len(cand) else 0):
            i, j, k = cand[int(rng.integers(len(cand)))]
            c = np.array([g.x[i, 0, 0], g.y[0, j, 0], g.z[0, 0, k]])
            if any(np.linalg.norm(c - np.asarray(p["center_mm"])) < r + p["diameter_mm"] / 2 + 3 * voxel for p in placed):
                continue
            lo = np.maximum(g.to_index(c - r * 1.2 - voxel), 0)
            hi = np.minimum(g.to_index(c + r * 1.2 + voxel) + 1, np.asarray(g.shape))
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            rn = np.sqrt(((g.x[sl[0]] - c[0]) / axes[0]) ** 2 + ((g.y[:, sl[1]] - c[1]) / axes[1]) ** 2
                         + ((g.z[:, :, sl[2]] - c[2]) / axes[2]) ** 2)
            cov = np.clip((1.0 - rn) * r / voxel + 0.5, 0.0, 1.0)
            core = cov > 0.5
            org = an.organs[sl]
            lung_like = (org == LUNG_L) | (org == LUNG_R) | (org == 9)
            if core.sum() == 0 or lung_like[core].mean() < 0.95:
                continue
            side_lab = LUNG_R if nod["lobe"].startswith("R") else LUNG_L
            value = 30.0 if nod["type"] == "solid" else -500.0
            hu = an.hu[sl]
            cov = cov * lung_like
            hu += cov * (value + 15.0 * rng.standard_normal(hu.shape).astype(np.float32) * cov - hu)
            lab = NODULE_SOLID if nod["type"] == "solid" else NODULE_GGO
            lesions[sl][core & lung_like] = lab
            an.organs[sl][core & lung_like] = side_lab
            placed.append({**nod, "center_mm": [round(float(v), 1) for v in c]})
            break
    return placed


def apply_disease(rng: np.random.Generator, an: Anatomy, factors: Dict[str, Any]) -> tuple[np.ndarray, List[Dict[str, Any]]]:
    """Render all findings of ``factors`` (see :func:`medssl.synth.risk.sample_factors`).

    Returns the lesion map (uint8, labels :data:`LESION_LABELS`) and the placed nodules.
    """
    lesions = np.zeros(an.hu.shape, np.uint8)
    apply_effusion(rng, an, lesions, factors["effusion_side"], factors["effusion_fraction"])
    apply_consolidation(rng, an, lesions, factors["consolidation_lobe"])
    apply_emphysema(rng, an, lesions, factors["emphysema_pattern"], factors["emphysema_fraction"])
    placed = apply_nodules(rng, an, lesions, factors["nodules"])
    return lesions, placed
