"""DrasCLR on the synthetic cohort: random init vs MoCo without location conditioning vs DrasCLR.

Each method is pretrained from the same prepared patch set under the same
wall-clock budget (``trainer.time_budget_s``), then every encoder is scored
with the DrasCLR tasks of :mod:`medssl.methods.drasclr_eval` (fixed hash split,
3 seeds, mean +- sd): severity macro AUC (linear probe on mean-pooled patient
features; the other poolings are in the full table), survival C-index (Cox
on mean-pooled features) and dense emphysema Dice. "MoCo without location
conditioning" is DrasCLR with ``backbone.conditioned=false`` and
``method.use_neighbour=false``: the same encoder with plain convolutions and
the local loss only (the paper's ablation baseline). Registration seconds per
subject are read from the patch set's report.json.

    medssl synth --out COHORT --n 64 --seed 0 [--preset tiny]
    medssl preprocess COHORT/manifest.jsonl --out COHORT/cache
    python benchmarks/drasclr_eval.py --cohort COHORT --out OUT --budget-s 90

Writes ``OUT/summary.md`` (the headline table) and the full tables
(``OUT/eval/results.md``, ``results.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "drasclr": [],
    "moco-no-location": ["backbone.conditioned=false", "method.use_neighbour=false"],
}


def pretrain(name: str, overrides: List[str], args: argparse.Namespace) -> Dict:
    run_dir = args.out / name
    ckpt = run_dir / "checkpoints" / "final.safetensors"
    if not ckpt.is_file():
        cmd = [sys.executable, "-m", "medssl", "pretrain", "--config", str(args.config),
               f"data.manifest={args.cohort / 'manifest.jsonl'}", f"data.cache={args.cohort / 'cache'}",
               f"run_dir={run_dir}", f"trainer.time_budget_s={args.budget_s}", "trainer.max_steps=1000000",
               "trainer.checkpoint_every=1000000", f"seed={args.pretrain_seed}", *overrides]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
                       stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "summary.json").read_text())


def headline(rows: List[Dict]) -> Dict[str, Dict[str, str]]:
    """model -> {metric: 'mean +- sd'} over seeds for the three headline numbers."""
    pick = {"severity AUC (mean pool)": ("patient_classification", "mean", "auc"),
            "severity AUC (attention)": ("patient_classification", "attention", "auc"),
            "C-index (mean pool)": ("patient_survival", "mean", "c_index"),
            "C-index (graph pool)": ("patient_survival", "graph", "c_index"),
            "dense Dice": ("dense_emphysema", "ridge", "dice"),
            "dense Dice, true block fractions": ("dense_emphysema", "ridge", "dice_true_blocks")}
    out: Dict[str, Dict[str, str]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        out[model] = {}
        for label, (task, proto, metric) in pick.items():
            v = np.array([r[metric] for r in rows if r["model"] == model and r["task"] == task
                          and r["protocol"] == proto], dtype=float)
            v = v[np.isfinite(v)]
            out[model][label] = f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}" if len(v) else "n/a"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", type=Path, required=True, help="folder with manifest.jsonl and cache/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "drasclr_tiny.yaml")
    ap.add_argument("--budget-s", type=float, default=90.0, help="pretraining wall-clock budget per method")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--label-fraction", type=float, default=1.0)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--pretrain-seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from medssl.anatomy.patch_source import AnatomicalPatchSource
    from medssl.config import load_config
    from medssl.methods import drasclr_eval as D
    from medssl.splits import describe_split_rule
    from medssl.eval.tables import write_results
    from medssl.eval.data import load_eval_data
    from medssl.eval.models import baseline_for, from_checkpoint
    from medssl.eval.tasks import EvalSettings, primary_metric

    cfg = load_config(args.config)
    kw = cfg.data.kwargs
    src = AnatomicalPatchSource(cache=args.cohort / "cache", patch=kw["patch"], step=kw["step"],
                                min_fraction=kw.get("min_fraction", 0.1), progress=False)
    report = json.loads((src.root / "report.json").read_text())
    reg_s = np.array(list(report["seconds"].values()), dtype=float)

    runs = {name: pretrain(name, ov, args) for name, ov in VARIANTS.items()}
    models = [from_checkpoint(args.out / name / "checkpoints" / "final.safetensors", name=name) for name in VARIANTS]
    models.append(baseline_for(models[0]))
    data = load_eval_data(args.cohort / "manifest.jsonl", cache=args.cohort / "cache")
    s = EvalSettings(seeds=tuple(int(x) for x in args.seeds.split(",")), label_fraction=args.label_fraction,
                     n_boot=args.n_boot)
    t0 = time.time()
    rows: List[Dict] = []
    for fn in (D.patient_classification_task, D.patient_survival_task, D.dense_emphysema_task):
        for m in models:  # the task functions directly: no other task module is imported
            rows += fn(m, data, s)
    write_results(rows, args.out / "eval", primary={t: primary_metric(t) for t in {r["task"] for r in rows}},
                  header={"split rule": describe_split_rule(s.split_rule, s.train_share), "seeds": args.seeds,
                          "command": " ".join(sys.argv), "pretraining budget": f"{args.budget_s:.0f} s per method"})
    table = headline(rows)
    cols = list(next(iter(table.values())))
    lines = [f"patch set: {src.root} ({src.num_locations} locations, {len(src.ids)} subjects); "
             f"registration s/subject: mean {reg_s.mean():.1f}, median {np.median(reg_s):.1f}, max {reg_s.max():.1f}",
             f"evaluation wall-clock: {time.time() - t0:.0f} s; label fraction {args.label_fraction:.0%}; "
             f"seeds {args.seeds}", "",
             "| model | steps | samples | params | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for m in table:
        r = runs.get(m, {})
        lines.append(f"| {m} | {r.get('steps_done', 0)} | {r.get('samples_seen', 0)} | {r.get('parameters', '-')} | "
                     + " | ".join(table[m][c] for c in cols) + " |")
    text = "\n".join(lines)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
