"""The built-in lung mask on the real chest CT and on synthetic patients, with and without the airway step.

Real CT: ../shared/data/real_chest_ct (relative to the project root; see its
README), labels in TotalSegmentator's scheme, ids read from structures.csv.
For the mask as it was before (``airway=False``) and as it is now it prints
the Dice against the union of the five lobes, the share of the trachea label
inside the mask and the CPU time of :func:`medssl.anatomy.lung_mask.lung_mask`
(one thread; ``time.process_time``), on the scan's own grid (what a cache at
the median spacing keeps) and on each ``--spacing`` given (linear resampling
of the HU, nearest of the labels).

Synthetic: ``--synthetic N`` patients of ``--preset`` (default ``default``; seed 0): the
Dice against the lung labels and the share of the trachea and main bronchi
(airway voxels outside the slice-wise filled lungs, joined to the top slice).

    OMP_NUM_THREADS=1 python benchmarks/lung_mask_real_ct.py [--spacing 1,1,1] [--synthetic 6]
        [--preset tiny] [--no-real]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from medssl.anatomy.lung_mask import lung_mask

REAL_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_chest_ct"
LOBES = ("upper_lobe_left", "lower_lobe_left", "upper_lobe_right", "middle_lobe_right", "lower_lobe_right")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def compare(name: str, hu: np.ndarray, spacing, truth: np.ndarray, airway: np.ndarray, airway_name: str) -> None:
    for label, on in (("before (airway=False)", False), ("now", True)):
        t = time.process_time()
        m = lung_mask(hu, spacing, airway=on)
        cpu = time.process_time() - t
        share = (m & airway).sum() / airway.sum()
        print(f"{name:34s} {label:22s} Dice {dice(m, truth):.4f}  {airway_name} inside {share:6.1%}"
              f"  cpu {cpu:5.1f} s")


def real_ct(spacings) -> None:
    import nibabel as nib

    with open(REAL_CT / "structures.csv", newline="") as f:
        ids = {row["structure"]: int(row["id"]) for row in csv.DictReader(f)}
    ct = nib.load(str(REAL_CT / "ct.nii.gz"))
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(str(REAL_CT / "labels.nii.gz")).dataobj)
    native = np.asarray(ct.header.get_zooms()[:3], float)
    grids = [(native, hu, labels)]
    for sp in spacings:
        f = native / np.asarray(sp, float)
        h = ndi.zoom(hu, f, order=1)
        grids.append((native * np.asarray(hu.shape) / np.asarray(h.shape), h, ndi.zoom(labels, f, order=0)))
    lobe_ids = [ids[f"lung_{n}"] for n in LOBES]
    for sp, h, lab in grids:
        name = f"real CT {'x'.join(str(s) for s in h.shape)} @ {'/'.join(f'{s:.2f}' for s in sp)} mm"
        compare(name, h, sp, np.isin(lab, lobe_ids), lab == ids["trachea"], "trachea")


def synthetic(n: int, preset: str) -> None:
    from medssl.synth.anatomy import AIRWAY, LUNG_L, LUNG_R
    from medssl.synth.patient import patient_rng, synth_patient

    for i in range(n):
        p = synth_patient(patient_rng(0, i), preset)
        org = p["organs"]
        lungs = (org == LUNG_L) | (org == LUNG_R)
        filled = np.stack([ndi.binary_fill_holes(lungs[:, :, z]) for z in range(lungs.shape[2])], axis=-1)
        lab, _ = ndi.label((org == AIRWAY) & ~filled)
        top = np.unique(lab[:, :, -1])
        central = np.isin(lab, top[top > 0])
        compare(f"synthetic {preset} #{i} ({p['record']['emphysema_pattern']})", p["hu"].astype(np.float32),
                np.linalg.norm(p["affine"][:3, :3], axis=0), lungs, central, "trachea+bronchi")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spacing", action="append", default=[],
                    help="also resample the real CT to this spacing (x,y,z mm)")
    ap.add_argument("--synthetic", type=int, default=0, help="synthetic patients to add")
    ap.add_argument("--preset", default="default", help="synthetic cohort preset (default, tiny)")
    ap.add_argument("--no-real", action="store_true", help="leave the real CT out")
    a = ap.parse_args()
    if a.no_real:
        pass
    elif (REAL_CT / "ct.nii.gz").is_file():
        real_ct([tuple(float(v) for v in s.split(",")) for s in a.spacing])
    else:
        print(f"real chest CT not found at {REAL_CT}; skipped")
    synthetic(a.synthetic, a.preset)


if __name__ == "__main__":
    main()
