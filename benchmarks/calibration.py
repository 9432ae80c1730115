"""Calibration of the evaluation harness: what a random-init encoder reaches when it is fine-tuned well.

A comparison of pretraining methods is only meaningful when the fine-tuning
harness works: with all the train labels, a random-initialisation encoder
must reach the supervised ceiling of the cohort (lungs >= 0.95, heart >= 0.85
Dice at 4 mm on the default preset), and at 10 % labels its mean Dice must
vary little between seeds (sd <= 0.03), or seed noise hides any effect of
pretraining. This script measures both on one cohort with the harness's
default fine-tuning settings (or the ones given) and prints a PASS / FAIL
line per target.

    python benchmarks/calibration.py --n 160 --seed 100 --out /tmp/calibration

It builds the cohort (``medssl synth``) and the 4 mm cache when the folder
does not hold them yet. Use the development cohort (seed 100) to choose
settings; the held-out cohorts only to confirm them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"left lung": 0.95, "right lung": 0.95, "heart": 0.85}


def ensure_cohort(out: Path, n: int, seed: int, spacing: float) -> tuple:
    from medssl.preprocess import preprocess_manifest
    from medssl.synth import generate_cohort

    root = out / f"cohort_n{n}_seed{seed}"
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        generate_cohort(root, n=n, seed=seed, preset="default", xrays=False, n_unpaired=0, progress=True)
    cache = root / f"cache_{spacing:g}mm"
    preprocess_manifest(manifest, cache, spacing=[spacing] * 3, progress=True)
    return manifest, cache


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/medssl_calibration"))
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--seed", type=int, default=100, help="cohort seed (100: the development cohort)")
    ap.add_argument("--spacing", type=float, default=4.0)
    ap.add_argument("--seeds", default="0,1,2", help="evaluation seeds of the 10 %% label runs")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the harness's)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--encoder-lr-scale", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--backbone", default="resnet", help="registered backbone of the random-init row")
    ap.add_argument("--backbone-kwargs", default='{"spatial_dims": 3, "in_channels": 1, "depth": 10, "width": 8}')
    ap.add_argument("--patch-size", default="32,32,32")
    ap.add_argument("--full-only", action="store_true", help="skip the 10 %% label seed-spread runs")
    ap.add_argument("--spread-only", action="store_true", help="skip the all-label run (only the 10 %% label runs)")
    args = ap.parse_args(argv)

    from medssl.eval.data import load_eval_data
    from medssl.eval.models import random_init
    from medssl.eval.tasks import EvalSettings, segmentation_task

    manifest, cache = ensure_cohort(args.out, args.n, args.seed, args.spacing)
    data = load_eval_data(manifest, cache=cache, spatial_dims=3)
    model = random_init(args.backbone, backbone_kwargs=json.loads(args.backbone_kwargs),
                        patch_size=[int(v) for v in args.patch_size.split(",")], name="random-init")
    s = EvalSettings()
    for key, val in (("steps", args.steps), ("lr", args.lr), ("encoder_lr_scale", args.encoder_lr_scale),
                     ("batch_size", args.batch_size)):
        if val is not None:
            setattr(s.seg, key, val)
    print(f"cohort {manifest} ({len(data.ids)} cases), fine-tuning {s.seg}")
    if args.full_only and args.spread_only:
        ap.error("--full-only and --spread-only leave nothing to run")
    ok = True
    if not args.spread_only:
        t0 = time.time()
        s.seeds, s.label_fraction = (0,), 1.0
        row = segmentation_task(model, data, s)[0]
        print(f"all train labels ({row['n_labelled']} cases), seed 0: {time.time() - t0:.0f} s")
        for k in sorted(k for k in row if k.startswith("dice_")):
            print(f"  {k[5:]:<20} Dice {row[k]:.3f}   HD95 {row['hd95_' + k[5:]]:.1f} mm")
        for organ, target in TARGETS.items():
            v = row.get(f"dice_{organ}", float("nan"))
            passed = v >= target
            ok &= passed
            print(f"{'PASS' if passed else 'FAIL'}: {organ} Dice {v:.3f} (target >= {target})")
    if not args.full_only:
        t0 = time.time()
        s.seeds, s.label_fraction = tuple(int(v) for v in args.seeds.split(",")), 0.1
        rows = segmentation_task(model, data, s)
        m = np.array([r["mean_dice"] for r in rows])
        sd = float(m.std(ddof=1)) if len(m) > 1 else 0.0
        print(f"10 % labels ({rows[0]['n_labelled']} cases), seeds {args.seeds}: mean Dice "
              f"{', '.join(f'{v:.3f}' for v in m)}; sd {sd:.3f} ({time.time() - t0:.0f} s)")
        organs = sorted(k[5:] for k in rows[0] if k.startswith("dice_"))
        print(f"  {'organ':<20} " + " ".join(f"seed {r['seed']:<3}" for r in rows) + "  sd")
        for organ in organs:
            v = np.array([r[f"dice_{organ}"] for r in rows])
            print(f"  {organ:<20} " + " ".join(f"{x:8.3f}" for x in v) + f"  {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}")
        passed = sd <= 0.03
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}: seed sd of the mean Dice at 10 % labels {sd:.3f} (target <= 0.03)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
