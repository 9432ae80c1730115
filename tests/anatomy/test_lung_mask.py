from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from medssl.anatomy.airway import find_trachea_seed, grow_airway
from medssl.anatomy.lung_mask import lung_mask


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def phantom():
    """Air around a body (+40 HU) with two lungs (-850) and a vessel (+40) inside one."""
    x, y, z = np.meshgrid(np.arange(64), np.arange(64), np.arange(40), indexing="ij")
    hu = np.full((64, 64, 40), -1000.0)
    body = ((x - 32) / 28.0) ** 2 + ((y - 32) / 22.0) ** 2 <= 1
    hu[body] = 40
    left = (((x - 20) / 9.0) ** 2 + ((y - 32) / 12.0) ** 2 + ((z - 20) / 16.0) ** 2) <= 1
    right = (((x - 44) / 9.0) ** 2 + ((y - 32) / 12.0) ** 2 + ((z - 20) / 16.0) ** 2) <= 1
    hu[left | right] = -850
    vessel = ((x - 20) ** 2 + (y - 32) ** 2 <= 2) & left
    hu[vessel] = 40
    return hu, left | right


def airway_phantom(emphysema=False, seed=0):
    """A chest (1.5 x 1.5 x 2.5 mm) whose trachea enters at the top slice and splits into two bronchi.

    Lungs at -850 HU with noise, the airway lumen at -1000 inside a +40 HU
    wall; the bronchi run from the carina (z = 44) into each lung, so that at
    -320 HU trachea and lungs are one component. ``emphysema`` makes the lower
    half of the right lung, where its bronchus ends, -975 HU: a growth that
    leaks into it would take that lung out of the mask.
    Returns (hu, lungs, trachea and main bronchi outside the lungs).
    """
    rng = np.random.default_rng(seed)
    shape = (128, 110, 60)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    hu = np.full(shape, -1000.0)
    body = ((x - 64) / 60.0) ** 2 + ((y - 55) / 48.0) ** 2 <= 1
    hu[body] = 40.0
    lungs = np.zeros(shape, bool)
    for cx in (36.0, 92.0):
        lungs |= ((x - cx) / 22.0) ** 2 + ((y - 55) / 32.0) ** 2 + ((z - 30) / 24.0) ** 2 <= 1
    lungs &= z < 56  # the apices lie below the top slices; the trachea reaches them
    hu[lungs] = -850.0 + rng.normal(0.0, 15.0, lungs.sum())
    # trachea (radius 6 voxels = 9 mm) from the top to the carina, then a bronchus into each lung
    lumen = ((x - 64) ** 2 + (y - 50) ** 2 <= 36) & (z >= 44)
    for cx in (36.0, 92.0):
        t = np.clip((z - 44.0) / -14.0, 0.0, 1.0)  # 0 at the carina, 1 fourteen slices down
        px, pz = 64 + (cx - 64) * t, 44 - 14 * t
        lumen |= ((x - px) ** 2 + (y - 50) ** 2 <= 16) & (np.abs(z - pz) <= 1.0) & (z <= 44)
    wall = ndi.binary_dilation(lumen, iterations=2) & ~lumen
    hu[wall & ~lungs] = 40.0
    hu[lumen] = -1000.0 + rng.normal(0.0, 10.0, lumen.sum())
    if emphysema:
        low = lungs & (x > 64) & (z < 30)
        hu[low] = -975.0 + rng.normal(0.0, 5.0, low.sum())
    central = lumen & ~lungs
    return hu, lungs, central


def test_lung_mask_finds_both_lungs_and_fills_vessels():
    hu, truth = phantom()
    mask = lung_mask(hu, spacing=(1.5, 1.5, 2.0))
    assert dice(mask, truth) > 0.95
    assert not mask[0, 0, 0]  # outside air excluded
    assert mask[20, 32, 20]  # the vessel inside the lung is filled
    assert not mask[32, 32, 20]  # mediastinum between the lungs is not lung


def test_no_lungs_gives_empty_mask():
    hu = np.full((20, 20, 10), 40.0)
    assert not lung_mask(hu).any()


def test_bad_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="hu"):
        lung_mask(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        lung_mask(np.zeros((4, 4, 4)), spacing=(1.0, 0.0, 1.0))


def test_trachea_and_main_bronchi_are_left_out():
    hu, lungs, central = airway_phantom()
    spacing = (1.5, 1.5, 2.5)
    old = lung_mask(hu, spacing, airway=False)
    assert (old & central).sum() / central.sum() > 0.9  # without the airway step the trachea is lung
    mask = lung_mask(hu, spacing)
    assert (mask & central).sum() / central.sum() <= 0.02
    assert dice(mask, lungs) >= 0.97
    assert dice(mask, lungs) >= dice(old, lungs)
    assert not mask[64, 50, 59] and not mask[64, 50, 50]  # top slice and mid-trachea
    assert mask[36, 55, 30] and mask[92, 55, 30]  # both lungs kept


def test_growth_stops_before_leaking_into_low_density_lung():
    hu, lungs, central = airway_phantom(emphysema=True)
    spacing = (1.5, 1.5, 2.5)
    low = lungs & (hu > -990) & (hu < -950)
    assert low.sum() > 20000
    air = hu < -320
    candidate = air & ~_border_air(air)
    seed = find_trachea_seed(candidate, spacing)
    lung_ml = candidate.sum() * np.prod(spacing) / 1000
    unchecked = grow_airway(hu, seed, spacing, lung_ml, max_fraction=1.0, leak_ratio=np.inf, max_area_ratio=np.inf)
    assert unchecked[low].mean() > 0.5  # without leak control the growth runs into the low-density lung
    grown = grow_airway(hu, seed, spacing, lung_ml)
    assert grown[low].mean() < 0.01 and grown[central].mean() > 0.7
    mask = lung_mask(hu, spacing)
    assert mask[low].mean() > 0.99  # the emphysema-like region stays in the lung mask
    assert (mask & central).sum() / central.sum() <= 0.05
    assert dice(mask, lungs) >= 0.97


def _border_air(air):
    out = np.zeros_like(air)
    for k in range(air.shape[2]):
        lab, _ = ndi.label(air[:, :, k])
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        out[:, :, k] = np.isin(lab, edge[edge > 0])
    return out


def _central_airway_label(organs):
    """Trachea and main bronchi of a synthetic patient: airway outside the slice-wise filled lungs, joined to the top."""
    from medssl.synth.anatomy import AIRWAY, LUNG_L, LUNG_R

    lungs = (organs == LUNG_L) | (organs == LUNG_R)
    filled = ~_border_air(~lungs)
    lab, _ = ndi.label((organs == AIRWAY) & ~filled)
    top = np.unique(lab[:, :, -1])
    return lungs, np.isin(lab, top[top > 0])


@pytest.mark.parametrize("preset,index,max_share", [("default", 1, 0.05), ("default", 2, 0.05), ("tiny", 0, 0.7)])
def test_synthetic_cohort_airway_is_left_out_and_lungs_kept(preset, index, max_share):
    from medssl.synth.patient import patient_rng, synth_patient

    p = synth_patient(patient_rng(0, index), preset)
    hu = p["hu"].astype(np.float32)
    spacing = np.linalg.norm(p["affine"][:3, :3], axis=0)
    lungs, central = _central_airway_label(p["organs"])
    assert central.sum() > 30  # the phantom has a trachea reaching the top slice
    old = lung_mask(hu, spacing, airway=False)
    mask = lung_mask(hu, spacing)
    assert (old & central).sum() / central.sum() > 0.95  # before the airway step the trachea was lung
    # coarse tiny grids blur the narrow bronchi into the lung; the trachea still goes
    assert (mask & central).sum() / central.sum() <= max_share
    assert dice(mask, lungs) >= max(0.95, dice(old, lungs) - 0.002)


REAL_CT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_chest_ct"


def _lobe_and_trachea_ids():
    """Label ids of the five lobes and the trachea, read from structures.csv (TotalSegmentator names)."""
    import csv

    with open(REAL_CT / "structures.csv", newline="") as f:
        ids = {row["structure"]: int(row["id"]) for row in csv.DictReader(f)}
    lobes = [ids[f"lung_{name}"] for name in ("upper_lobe_left", "lower_lobe_left", "upper_lobe_right",
                                              "middle_lobe_right", "lower_lobe_right")]
    return lobes, ids["trachea"]


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_CT / "ct.nii.gz").is_file(), reason=f"real chest CT not found at {REAL_CT}")
def test_real_chest_ct_lungs_without_trachea():
    """On its own grid (512 x 512 x 133, 0.70 x 0.70 x 2.5 mm, the grid a median-spacing cache keeps)."""
    nib = pytest.importorskip("nibabel")
    ct = nib.load(str(REAL_CT / "ct.nii.gz"))
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(str(REAL_CT / "labels.nii.gz")).dataobj)
    lobe_ids, trachea_id = _lobe_and_trachea_ids()
    assert (lobe_ids, trachea_id) == ([10, 11, 12, 13, 14], 16)
    lobes, trachea = np.isin(labels, lobe_ids), labels == trachea_id
    assert nib.aff2axcodes(ct.affine)[2] == "S"  # Z points to the head, as lung_mask expects
    mask = lung_mask(hu, spacing=np.asarray(ct.header.get_zooms()[:3], float))
    assert dice(mask, lobes) >= 0.97
    assert (mask & trachea).sum() / trachea.sum() <= 0.10
