"""Results tables by the evaluation protocol (../shared/PROTOCOL.md), one suite per method family.

Every row of a suite is pretrained on the same synthetic cohort under the same
wall-clock budget, then evaluated with the same tasks, split, label fraction
and seeds, next to a random initialisation of the same backbone trained the
same way. The table goes to OUT/results.md (and every per-task table with all
metrics under OUT/eval/).

    python benchmarks/protocol.py --suite unimiss --out runs/protocol_unimiss
    python benchmarks/protocol.py --suite iicc --n 64 --budget-s 60
    python benchmarks/protocol.py --suite t3d --seed 1      # a second cohort

Suites:
  unimiss  UniMiSS, UniMiSS+ and UniMiSS+ ablations (no DRR pairs, no slice terms, no reconstruction);
           organ segmentation Dice on CT, consolidation AUC on the X-rays (2D path)
  unimiss_xray  the same rows, X-ray evaluation only (reuses the pretrained runs in --out)
  iicc     SwAV, DeepCluster-V2, IICC; severity AUC and segmentation Dice on volumes, consolidation AUC on X-rays
  t3d      vision-only restoration + contrastive (t3d_vision), T3D; retrieval R@k, zero-shot AUC, segmentation Dice
  baselines SimCLR, MoCo v2, DINO, MAE on 3D patches; segmentation Dice and severity AUC
  cpu_baselines SimCLR, MoCo v2 (one ResNet-10 and its random twin), MAE; frozen probes of emphysema_pct and
           lung_function (R^2, Spearman), nodule / consolidation / effusion (AUC), survival (C-index)
  resenc   SimCLR, MoCo v2, DINO, masked U-Net reconstruction (mae_unet), T3D's vision objective on one ResEnc U-Net
           encoder (nnU-Net's network) with one random-init row; severity probe and segmentation
  resenc_frozen the same rows on the frozen tasks of cpu_baselines only
  cpu_mae_seg MAE (ViT) and its random twin, organ segmentation fine-tuned with the calibrated harness
  cpu_methods T3D, IICC, DrasCLR, UniMiSS+ (each with its random twin): the frozen probes above, plus report
           retrieval and zero-shot (T3D), X-ray consolidation (IICC, UniMiSS+), DrasCLR's patient-level tasks

    python benchmarks/protocol.py --suite cpu_baselines --n 160 --seed 0 --steps 1500 --label-fraction 1.0
    python benchmarks/protocol.py --suite cpu_methods --n 160 --seed 0 --budget-s 600 --label-fraction 1.0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl.demo import FROZEN, DemoSettings, Eval, Stage, run_demo

SEG = Eval(("segmentation",), None, 3, {"seg_overlap": 0.0})  # the harness's calibrated fine-tuning (800 steps)
#: The same on one labelled subset (seed 0): about 14 min per model on one loaded CPU thread instead of 42
SEG_SEED0 = Eval(("segmentation",), None, 3, {"seg_overlap": 0.0, "seeds": (0,)})
SEVERITY = Eval(("classification",), "severity", 3, FROZEN)
#: The powered frozen-feature tasks of the CPU tier: two continuous targets (R^2 / Spearman) and three binary findings
#: (AUC) over all test patients, plus survival (C-index); features of windows of the pretraining patch size.
FROZEN_TASKS = (
    Eval(("regression:emphysema_pct", "regression:lung_function", "classification:nodule",
          "classification:consolidation", "classification:effusion", "survival"), None, 3,
         {**FROZEN, "feature_mode": "sliding"}),
)
XRAY = Eval(("classification",), "consolidation", 2, FROZEN)
#: DrasCLR's own protocol: patient features from its anatomical patches at their atlas locations (pooled or with
#: trained pooling heads), for the same continuous targets, nodules and survival
DRASCLR_TASKS = (
    Eval(("patient_regression:emphysema_pct", "patient_regression:lung_function", "patient_classification:nodule",
          "patient_survival")),
)

#: MiT / MiT+ segment with their pretrained decoders (mit_segmentation), on the harness's schedule
MIT_SEG = Eval(("mit_segmentation",), None, 3, {"seg_overlap": 0.0})

SUITES = {
    "unimiss": [
        Stage("unimiss", "unimiss_tiny", (MIT_SEG, XRAY), group="mit_tiny"),
        Stage("unimiss_plus", "unimiss_plus_tiny", (MIT_SEG, XRAY), group="mit_plus"),
        Stage("unimiss_plus-no_drr", "unimiss_plus_tiny", (MIT_SEG, XRAY), ("method.use_drr=false",), group="mit_plus"),
        Stage("unimiss_plus-no_slices", "unimiss_plus_tiny", (MIT_SEG, XRAY), ("method.use_slices=false",),
              group="mit_plus"),
        Stage("unimiss_plus-no_recon", "unimiss_plus_tiny", (MIT_SEG, XRAY), ("method.use_recon=false",),
              group="mit_plus"),
    ],
    # the UniMiSS rows on X-rays only (no segmentation fine-tuning: the cheap way to compare the 2D path)
    "unimiss_xray": [
        Stage("unimiss", "unimiss_tiny", (XRAY,), group="mit_tiny"),
        Stage("unimiss_plus", "unimiss_plus_tiny", (XRAY,), group="mit_plus"),
        Stage("unimiss_plus-no_drr", "unimiss_plus_tiny", (XRAY,), ("method.use_drr=false",), group="mit_plus"),
        Stage("unimiss_plus-no_slices", "unimiss_plus_tiny", (XRAY,), ("method.use_slices=false",),
              group="mit_plus"),
        Stage("unimiss_plus-no_recon", "unimiss_plus_tiny", (XRAY,), ("method.use_recon=false",), group="mit_plus"),
    ],
    "iicc": [
        Stage("swav", "swav_tiny", (SEVERITY, SEG, XRAY), group="slice_resnet"),
        Stage("deepcluster_v2", "deepcluster_tiny", (SEVERITY, SEG, XRAY), group="slice_resnet"),
        Stage("iicc", "iicc_tiny", (SEVERITY, SEG, XRAY), group="slice_resnet"),
    ],
    "t3d": [
        Stage("t3d_vision", "t3d_tiny", (Eval(("report_retrieval", "zero_shot")), SEG),
              ("method.name=t3d_vision",), group="t3d"),
        Stage("t3d", "t3d_tiny", (Eval(("report_retrieval", "zero_shot")), SEG), group="t3d"),
    ],
    # the CPU tier of the generic baselines: the frozen tasks with power; SimCLR and MoCo share a ResNet-10 and
    # its random-init twin
    "cpu_baselines": [
        Stage("simclr", "simclr_tiny", FROZEN_TASKS, group="resnet10"),
        Stage("moco", "moco_tiny", FROZEN_TASKS, group="resnet10"),
        Stage("mae", "mae_tiny", FROZEN_TASKS, group="vit"),
    ],
    "baselines": [
        Stage(name, f"{name}_tiny", (SEG, SEVERITY), group=name) for name in ("simclr", "moco", "dino", "mae")
    ],
    # MAE's target: fine-tuning (a ViT's masked-reconstruction features are made to be fine-tuned, not probed)
    "cpu_mae_seg": [
        Stage("mae", "mae_tiny", (SEG_SEED0,), group="vit"),
    ],
    # the CPU tier of the paper methods: the powered frozen tasks for every row, plus what each method targets
    # (X-rays for the 2D/3D methods, patient-level anatomy features for DrasCLR, reports for T3D)
    "cpu_methods": [
        Stage("t3d", "t3d_tiny", (Eval(("report_retrieval", "zero_shot")),) + FROZEN_TASKS, group="t3d"),
        Stage("iicc", "iicc_tiny", FROZEN_TASKS + (XRAY,), group="iicc"),
        Stage("drasclr", "drasclr_tiny", DRASCLR_TASKS, group="drasclr"),
        Stage("unimiss_plus", "unimiss_plus_tiny", FROZEN_TASKS + (XRAY,), group="mit_plus"),
    ],
    # one fixed backbone for every generic objective, nnU-Net's ResEnc U-Net (configs/*_resenc_tiny.yaml: the same
    # encoder, and the whole U-Net for the masked reconstruction), so the rows compare methods, not backbones;
    # one random-init row
    "resenc": [
        Stage("simclr", "simclr_resenc_tiny", (SEVERITY, SEG), group="resenc_unet"),
        Stage("moco", "moco_resenc_tiny", (SEVERITY, SEG), group="resenc_unet"),
        Stage("dino", "dino_resenc_tiny", (SEVERITY, SEG), group="resenc_unet"),
        Stage("mae_unet", "mae_resenc_tiny", (SEVERITY, SEG), group="resenc_unet"),
        Stage("t3d_vision", "t3d_resenc_tiny", (SEVERITY, SEG), ("method.name=t3d_vision",), group="resenc_unet"),
    ],
    # the same rows on the powered frozen tasks only (no fine-tuning: the cheap first look at one shared encoder)
    "resenc_frozen": [
        Stage("simclr", "simclr_resenc_tiny", FROZEN_TASKS, group="resenc_unet"),
        Stage("moco", "moco_resenc_tiny", FROZEN_TASKS, group="resenc_unet"),
        Stage("dino", "dino_resenc_tiny", FROZEN_TASKS, group="resenc_unet"),
        Stage("mae_unet", "mae_resenc_tiny", FROZEN_TASKS, group="resenc_unet"),
        Stage("t3d_vision", "t3d_resenc_tiny", FROZEN_TASKS, ("method.name=t3d_vision",), group="resenc_unet"),
    ],
}


NOTE = ("Segmentation rows use the harness's calibrated fine-tuning (docs/evaluation.md); frozen rows a linear "
        "probe (regularisation by cross-validation on the train split) and kNN on pooled features.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--out", type=Path, default=None, help="default: runs/protocol_<suite>_n<N>_s<seed>")
    ap.add_argument("--n", type=int, default=64, help="patients (PROTOCOL: 64)")
    ap.add_argument("--seed", type=int, default=0, help="cohort seed (a second cohort: 1)")
    ap.add_argument("--preset", default="default", help="cohort size preset")
    ap.add_argument("--budget-s", type=float, default=60.0, help="pretraining wall-clock per row (demo tier: ~60)")
    ap.add_argument("--steps", type=int, default=None,
                    help="a fixed number of pretraining steps per row instead of --budget-s (a row then does not "
                         "depend on how loaded the machine is)")
    ap.add_argument("--spacing", default="4,4,4", help="preprocessing spacing in mm")
    ap.add_argument("--label-fraction", type=float, default=0.1)
    ap.add_argument("--only", default=None, help="comma-separated subset of the suite's rows")
    args = ap.parse_args()
    out = args.out or Path("runs") / f"protocol_{args.suite}_n{args.n}_s{args.seed}"
    settings = DemoSettings(out=out, n=args.n, seed=args.seed, preset=args.preset, budget_s=args.budget_s,
                            spacing=tuple(float(v) for v in args.spacing.split(",")),
                            label_fraction=args.label_fraction,
                            methods=args.only.split(",") if args.only else None, max_steps=args.steps,
                            note=NOTE)
    result = run_demo(settings, stages=SUITES[args.suite])
    print(result["table"])
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
