"""Lung-mask registration: seconds per subject and warped-mask Dice for a few optimiser settings.

Reads a DrasCLR patch set (``masks/*.npy``, ``atlas_mask.nii.gz``) and the
cache it was made from, registers a few subjects with each setting and prints
the mean seconds per subject and each subject's Dice; the first setting is
the old default, so the ratios are measured in the same run.

    python benchmarks/registration.py --patch-set COHORT/drasclr_p16_s13 --cache COHORT/cache \
        --ids synth_0010,synth_0020,synth_0030,synth_0040
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "200 it / 25 %": {"iterations": (200, 100, 50), "sampling": 0.25},
    "60 it / 25 %": {"iterations": (60, 30, 15), "sampling": 0.25},
    "200 it / 10 %": {"iterations": (200, 100, 50), "sampling": 0.1},
    "60 it / 10 % (default)": {},
    "30 it / 10 %": {"iterations": (30, 15, 8), "sampling": 0.1},
}


def main() -> int:
    from medssl.anatomy.atlas import Atlas
    from medssl.anatomy.registration import register_masks
    from medssl.preprocess import Cache

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch-set", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--ids", required=True, help="comma-separated subject ids with masks in the patch set")
    args = ap.parse_args()
    atlas = Atlas.load(args.patch_set / "atlas_mask.nii.gz")
    cache = Cache(args.cache)
    ids = args.ids.split(",")
    base = None
    for name, kw in SETTINGS.items():
        t0, dice = time.perf_counter(), []
        for cid in ids:
            mask = np.load(args.patch_set / "masks" / f"{cid}.npy", allow_pickle=False)
            res = register_masks(mask, np.asarray(cache.meta(cid)["affine"], float), atlas.mask, atlas.affine, **kw)
            dice.append(res.dice)
        sec = (time.perf_counter() - t0) / len(ids)
        base = base or sec
        print(f"{name:24s} {sec:6.2f} s/subject ({base / sec:.1f}x the first)  Dice {', '.join(f'{d:.3f}' for d in dice)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
