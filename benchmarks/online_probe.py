"""How much of a time-budgeted pretraining run's wall-clock goes to the online kNN probe:
the wall-clock-share cadence (``eval.probe_share``) against a fixed cadence, measured in the same run.

    python benchmarks/online_probe.py [--budget 150] [--n 64] [--cohort DIR] [--keep]

A synthetic cohort of ``--n`` patients (``medssl synth --preset default
--no-xrays``, about 35 s for 64 patients on one core; or ``--cohort DIR``,
an earlier cohort with a ``manifest.jsonl``) is pretrained on twice with
``configs/simclr_tiny.yaml``, each run in its own ``medssl pretrain``
process with ``OMP_NUM_THREADS=1``, ``trainer.time_budget_s=--budget`` and
``trainer.max_steps`` far beyond what the budget allows (the budget stops
the run), progress bar off:

  fixed    eval.knn_every=50 eval.knn_max_cases=64 eval.probe_share=1.0: a probe
           every 50 steps over 64 cases, no wall-clock limit (the schedule before
           the share limit)
  default  the preset's eval settings (knn_every=50, knn_max_cases=32,
           probe_share=0.05): at least 50 steps apart and at most 5 % of the
           wall-clock

The cache of the cohort (``<cohort>/cache``) is built by the first run,
before its clock starts; the second reuses it. Prints, from each run's
``summary.json`` and ``knn.csv``: steps done, wall-clock s, probes,
``probe_s`` (probe set collection included), the probe share of the
wall-clock, the cost of one probe (min-max), probe-set cases and steps/s;
then the default run's share against the 5 % target and its steps against
the fixed run's. With ``--n`` below 64 the fixed run's probe set is all the
cohort's cases, not 64.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "simclr_tiny.yaml"
TARGET_SHARE = 0.05
RUNS = [
    ("fixed", ["eval.knn_every=50", "eval.knn_max_cases=64", "eval.probe_share=1.0"]),
    ("default", []),
]


def _fail(what: str, out: subprocess.CompletedProcess) -> None:
    tail = (out.stderr or "")[-3000:] or (out.stdout or "")[-3000:]
    sys.exit(f"{what} failed (exit status {out.returncode}); the end of its output:\n{tail}")


def _medssl(args: List[str], what: str) -> Tuple[subprocess.CompletedProcess, float]:
    """Run ``medssl ARGS`` in a process with one CPU thread; exit naming ``what`` if it fails; (result, seconds)."""
    path = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "medssl", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        _fail(what, res)
    return res, time.perf_counter() - t0


def synth(out: Path, n: int, seed: int) -> float:
    return _medssl(["synth", "--out", str(out), "--n", str(n), "--seed", str(seed), "--preset", "default",
                    "--no-xrays", "--no-progress"], "medssl synth")[1]


def _probe_rows(run_dir: Path) -> List[Dict[str, str]]:
    path = run_dir / "knn.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def pretrain(name: str, overrides: List[str], manifest: Path, run_dir: Path, budget: float) -> Dict:
    res, process_s = _medssl(["pretrain", "--config", str(CONFIG), "--no-resume", f"data.manifest={manifest}",
                              f"run_dir={run_dir}", f"trainer.time_budget_s={budget}", "trainer.max_steps=10000000",
                              "trainer.progress_bar=false", *overrides],
                             f"the {name!r} run (medssl pretrain ... {' '.join(overrides)})")
    path = run_dir / "summary.json"
    if not path.is_file():
        _fail(f"the {name!r} run wrote no {path}; it", res)
    s = json.loads(path.read_text())
    if s.get("stop_reason") != "time_budget":
        print(f"note: the {name!r} run stopped by {s.get('stop_reason')!r}, not by the time budget", file=sys.stderr)
    rows = _probe_rows(run_dir)
    costs = [float(r["probe_s"]) for r in rows if r.get("probe_s")]
    cases = {int(float(r["knn_cases"])) for r in rows if r.get("knn_cases")}
    return {
        "name": name, "overrides": overrides, "steps": int(s["steps_done"]), "wall_s": float(s["wall_clock_s"]),
        "probes": int(s["probes"]), "probe_s": float(s["probe_s"]), "share": float(s["probe_share"]),
        "probe_min_s": min(costs) if costs else float("nan"), "probe_max_s": max(costs) if costs else float("nan"),
        "collect_s": float(s["probe_s"]) - sum(costs),  # probe_s counts collecting the set; knn.csv does not
        "cases": "/".join(str(c) for c in sorted(cases)) or "-", "process_s": process_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=150.0, help="seconds of wall-clock per run (trainer.time_budget_s)")
    ap.add_argument("--n", type=int, default=64, help="patients to synthesise (ignored with --cohort)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    ap.add_argument("--cohort", type=Path, default=None, help="an existing cohort folder with manifest.jsonl (its cache/ is built there)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (and the synthesised cohort); print where")
    a = ap.parse_args()
    if a.budget <= 0:
        ap.error("--budget must be > 0")

    work = Path(tempfile.mkdtemp(prefix="medssl_online_probe_"))
    try:
        if a.cohort is not None:
            manifest = a.cohort / "manifest.jsonl"
            if not manifest.is_file():
                ap.error(f"--cohort {a.cohort}: no manifest.jsonl there")
            print(f"cohort: {a.cohort}")
        else:
            cohort = work / "cohort"
            dt = synth(cohort, a.n, a.seed)
            manifest = cohort / "manifest.jsonl"
            print(f"cohort: {a.n} patients, preset default, synthesised in {dt:.1f} s")
        results = []
        for name, overrides in RUNS:
            r = pretrain(name, overrides, manifest, work / f"run_{name}", a.budget)
            results.append(r)
            print(f"  {name}: done, process {r['process_s']:.1f} s", file=sys.stderr)

        print(f"\nsimclr_tiny, time budget {a.budget:g} s per run, OMP_NUM_THREADS=1\n")
        print("| run | eval overrides | steps | wall-clock s | probes | probe_s | probe share | one probe s (min-max) | set collection s | probe cases | steps/s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['name']} | {' '.join(r['overrides']) or '(preset)'} | {r['steps']} | {r['wall_s']:.1f} | {r['probes']} | "
                  f"{r['probe_s']:.2f} | {100 * r['share']:.1f} % | {r['probe_min_s']:.3f}-{r['probe_max_s']:.3f} | "
                  f"{r['collect_s']:.2f} | {r['cases']} | {r['steps'] / max(r['wall_s'], 1e-9):.2f} |")
        fixed, default = results
        verdict = "within" if default["share"] <= TARGET_SHARE else "over"
        print(f"\ndefault: probe share {100 * default['share']:.1f} % of the wall-clock, {verdict} the "
              f"{100 * TARGET_SHARE:.0f} % target (fixed cadence: {100 * fixed['share']:.1f} %)")
        if fixed["steps"] > 0:
            print(f"default: {default['steps']} steps against {fixed['steps']} with the fixed cadence "
                  f"({default['steps'] / fixed['steps']:.2f}x) in the same budget")
        if a.keep:
            print(f"\nrun folders kept under {work}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
