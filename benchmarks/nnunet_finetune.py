"""Fine-tune in nnU-Net with and without medssl-pretrained weights, on CPU, and print both Dice values.

    python benchmarks/nnunet_finetune.py --out runs/nnunet_finetune            # the defaults below
    python benchmarks/nnunet_finetune.py --n 12 --pretrain-steps 100 --epochs 10 --iters 10

The flow is the one docs/nnunet.md describes, on the synthetic cohort:
``medssl synth`` (an MSD-layout dataset) -> ``nnUNetv2_convert_MSD_dataset``
-> ``nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM`` (at a coarse
target spacing so a CPU can train it) -> ``medssl preprocess`` at the same
spacing -> ``medssl pretrain`` (masked reconstruction of the planned ResEnc
U-Net, ``configs/mae_resenc_base.yaml`` at CPU size, CT normalisation from
the plans) -> ``medssl export --to nnunet`` -> ``nnUNetv2_train DATASET
3d_fullres 0 -p nnUNetResEncUNetMPlans -device cpu`` twice, from scratch and
with ``-pretrained_weights``, each with its own nnUNet_results folder. The
Dice values are nnU-Net's own (fold 0 validation, ``summary.json``,
foreground mean).

nnU-Net's shortest stock schedule (``nnUNetTrainer_1epoch``) is 250
iterations, too long for two CPU cores, and without timm nnU-Net's trainer
lookup fails for every ``-tr`` but ``nnUNetTrainer`` (it imports its Primus
trainers on the way). So the benchmark runs ``nnUNetv2_train``'s own entry
point (argument parsing, ``-pretrained_weights``, training, fold-0
validation) with ``-tr nnUNetTrainer`` in a process that sets the trainer's
epochs and iterations per epoch (``--epochs``, ``--iters``; ``--iters 0``
runs the console script as it is, 1000 epochs of 250). Pretraining uses
every case's image, the validation cases' included (no labels are read).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: nnUNetv2_train's entry point with the trainer's schedule set (argv: EPOCHS ITERS VAL_ITERS, then its own).
TRAIN = """
import functools, sys
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
epochs, iters, val_iters = (int(v) for v in sys.argv[1:4])
init = nnUNetTrainer.__init__
@functools.wraps(init)  # the trainer records its arguments from its own signature
def short(self, *a, **k):
    init(self, *a, **k)
    self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = epochs, iters, val_iters
nnUNetTrainer.__init__ = short
from nnunetv2.run.run_training import run_training_entry
sys.argv = ["nnUNetv2_train"] + sys.argv[4:]
run_training_entry()
"""


def run(cmd, env=None, log=None) -> float:
    """Run ``cmd``; its output goes to ``log``; returns the seconds it took (a failure stops the benchmark)."""
    t = time.time()
    print("$", " ".join(str(c) for c in cmd), flush=True)
    with open(log, "w") if log else open(os.devnull, "w") as fh:
        res = subprocess.run([str(c) for c in cmd], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        tail = Path(log).read_text()[-3000:] if log else ""
        sys.exit(f"failed ({res.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/nnunet_finetune"))
    ap.add_argument("--n", type=int, default=10, help="synthetic patients (fold 0 validates on a fifth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spacing", type=float, default=6.0, help="target spacing (mm) of the plans and the cache")
    ap.add_argument("--dataset-id", type=int, default=512)
    ap.add_argument("--pretrain-steps", type=int, default=60)
    ap.add_argument("--trainer", default="nnUNetTrainer", help="nnU-Net trainer (-tr)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs (with --iters)")
    ap.add_argument("--iters", type=int, default=10, help="training iterations per epoch (0: nnU-Net's own schedule)")
    ap.add_argument("--val-iters", type=int, default=2, help="validation iterations per epoch (with --iters)")
    args = ap.parse_args()

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    logs = out / "logs"
    logs.mkdir()
    base = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), nnUNet_def_n_proc="1",
                nnUNet_raw=str(out / "nnUNet_raw"), nnUNet_preprocessed=str(out / "nnUNet_preprocessed"),
                nnUNet_results=str(out / "nnUNet_results"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(base[key]).mkdir()
    medssl, sid = BIN / "medssl", str(args.dataset_id)
    times = {}

    # 1. the cohort, in MSD layout (imagesTr, labelsTr, imagesTs, dataset.json) as nnU-Net's converter reads it
    times["synth"] = run([medssl, "synth", "--out", out / "cohort", "--n", args.n, "--seed", args.seed, "--preset",
                          "tiny", "--no-xrays", "--no-progress"], log=logs / "synth.txt")
    task = out / f"Task{args.dataset_id}_Synth"
    task.mkdir()
    for part in ("imagesTr", "labelsTr"):
        (task / part).mkdir()
        for f in sorted((out / "cohort" / part).glob("*.nii.gz")):
            shutil.copy(f, task / part / f.name)
    (task / "imagesTs").mkdir()
    shutil.copy(out / "cohort" / "dataset.json", task / "dataset.json")

    # 2. nnU-Net: convert, fingerprint, plan (ResEnc M) at the target spacing, preprocess
    sp = [str(args.spacing)] * 3
    times["convert"] = run([BIN / "nnUNetv2_convert_MSD_dataset", "-i", task, "-np", "1"], base, logs / "convert.txt")
    times["plan"] = run([BIN / "nnUNetv2_plan_and_preprocess", "-d", sid, "-pl", "nnUNetPlannerResEncM", "-c",
                         "3d_fullres", "-np", "1", "-overwrite_target_spacing", *sp], base, logs / "plan.txt")
    plans = next((out / "nnUNet_preprocessed").glob("Dataset*")) / "nnUNetResEncUNetMPlans.json"
    conf = json.loads(plans.read_text())["configurations"]["3d_fullres"]
    arch = conf["architecture"]["arch_kwargs"]
    print(f"plans: patch {conf['patch_size']}, spacing {conf['spacing']}, features {arch['features_per_stage']}, "
          f"blocks {arch['n_blocks_per_stage']}, batch {conf['batch_size']}")

    # 3. medssl: the cache at the plans' spacing, pretraining on the planned network, export
    from medssl.io.nnunet_plans import read_configuration

    planned = read_configuration(plans, "3d_fullres")
    times["preprocess"] = run([medssl, "preprocess", out / "cohort" / "manifest.jsonl", "--out", out / "cache",
                               "--spacing", ",".join(f"{s:g}" for s in planned.spacing_xyz), "--quiet"],
                              base, logs / "preprocess.txt")
    view = [max(8, p // 8 * 8) for p in planned.patch_size_zyx]  # divisible by the 8 of three strided stages
    times["pretrain"] = run([medssl, "pretrain", "--config", ROOT / "configs" / "mae_resenc_base.yaml",
                             f"data.manifest={out / 'cohort' / 'manifest.jsonl'}", f"data.cache={out / 'cache'}",
                             f"run_dir={out / 'pretrain'}", f"backbone.plans={plans}", "trainer.accelerator=cpu",
                             'trainer.precision="32"', f"trainer.max_steps={args.pretrain_steps}",
                             "schedules.warmup_steps=5", "optim.lr=1e-3", "data.batch_size=2", "data.num_workers=0",
                             f"data.patch_size={view}", f"method.view_size={view}", "method.block_size=4",
                             "trainer.progress_bar=false", "trainer.tensorboard=false", "trainer.checkpoint_every=1000",
                             "eval.knn_every=0"], base, logs / "pretrain.txt")
    weights = out / "pretrained.pth"
    times["export"] = run([medssl, "export", out / "pretrain" / "checkpoints" / "final.safetensors", "--to", "nnunet",
                           "--plans", plans, "--configuration", "3d_fullres", "--out", weights], base, logs / "export.txt")

    # 4. nnU-Net fine-tuning, from scratch and from the export, each in its own results folder
    dice = {}
    for name, extra in (("scratch", []), ("pretrained", ["-pretrained_weights", weights])):
        env = dict(base, nnUNet_results=str(out / f"results_{name}"), nnUNet_n_proc_DA="0")  # augment in-process
        Path(env["nnUNet_results"]).mkdir()
        argv = [sid, "3d_fullres", "0", "-p", "nnUNetResEncUNetMPlans", "-tr", args.trainer, "-device", "cpu", *extra]
        if args.iters > 0:
            cmd = [sys.executable, "-c", TRAIN, args.epochs, args.iters, args.val_iters, *argv]
        else:
            cmd = [BIN / "nnUNetv2_train", *argv]
        times[f"train_{name}"] = run(cmd, env, logs / f"train_{name}.txt")
        summary = next(Path(env["nnUNet_results"]).rglob("fold_0/validation/summary.json"))
        dice[name] = json.loads(summary.read_text())["foreground_mean"]["Dice"]

    result = {"dice": dice, "seconds": {k: round(v, 1) for k, v in times.items()}, "n": args.n,
              "spacing": args.spacing, "pretrain_steps": args.pretrain_steps, "trainer": args.trainer,
              "epochs": args.epochs if args.iters else None, "iters_per_epoch": args.iters or None, "patch_size": conf["patch_size"],
              "features_per_stage": arch["features_per_stage"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["seconds"]))
    print(f"fold-0 validation Dice (nnU-Net, foreground mean): scratch {dice['scratch']:.4f}, "
          f"pretrained {dice['pretrained']:.4f} ({args.trainer}, "
          + (f"{args.epochs} epochs of {args.iters} iterations)" if args.iters else "its own schedule)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
