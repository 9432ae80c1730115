"""Paired comparison of two models on the same test patients: delta, 95 % bootstrap CI, verdict.

Every task row can carry its per-patient outputs under the key ``"_cases"``
(never written to the CSVs)::

    {"ids": [...test patient ids...], "metric": "mean_dice", "kind": "mean",
     "arrays": {"score": [N]}}

``kind`` says how the row's metric is recomputed on any subset of the test
patients from ``arrays`` (aligned with ``ids``):

- ``mean``: the mean of ``score`` (per-patient Dice, per-patient HD95);
- ``auc``: ROC AUC of ``y`` (class index) against ``proba`` (``[N, C]``),
  binary or macro one-vs-rest over the classes present;
- ``r2`` / ``spearman``: of ``pred`` against ``y``;
- ``c_index``: Harrell's concordance of ``risk`` with ``time`` / ``event``.

Two models are compared on the patients both were tested on, seed by seed
(the same labelled subsets and test patients). One bootstrap draw resamples
test patients with replacement and applies the same draw to every seed and
to both models; the draw's delta is ``mean over seeds of metric(model) - mean
over seeds of metric(baseline)``. The interval is the 2.5 and 97.5
percentiles of the draws (percentile bootstrap, Efron & Tibshirani 1993),
the point estimate the delta on all test patients. The verdict is ``helps``
when the interval lies above zero in the direction in which the metric
improves, ``hurts`` when it lies below, else ``no detectable difference``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .metrics import roc_auc
from .regression import regression_report
from .survival import concordance_index

CASES_KEY = "_cases"
#: Metrics where a smaller value is better (HD95 in mm, errors).
LOWER_IS_BETTER = ("hd95", "mae", "mse", "rmse", "loss")


def lower_is_better(metric: str) -> bool:
    m = metric.lower()
    return any(m == k or m.startswith(k + "_") or m.endswith("_" + k) or m.startswith("mean_" + k) for k in LOWER_IS_BETTER)


def _metric_fn(kind: str) -> Callable[[Mapping[str, np.ndarray]], float]:
    if kind == "mean":
        return lambda a: float(np.nanmean(a["score"])) if np.isfinite(a["score"]).any() else float("nan")
    if kind == "auc":
        return lambda a: roc_auc(a["y"], a["proba"])
    if kind in ("r2", "spearman"):
        return lambda a: regression_report(a["y"], a["pred"])[kind]
    if kind == "c_index":
        return lambda a: concordance_index(a["time"], a["risk"], a["event"])
    raise ValueError(f"kind: unknown per-case metric kind '{kind}' (mean, auc, r2, spearman, c_index)")


def metric_on(cases: Mapping[str, Any], index: Optional[np.ndarray] = None) -> float:
    """The row's metric recomputed from its per-patient arrays, on ``index`` (default: all patients)."""
    arrays = {k: np.asarray(v) for k, v in cases["arrays"].items()}
    if index is not None:
        arrays = {k: v[index] for k, v in arrays.items()}
    return _metric_fn(str(cases["kind"]))(arrays)


def _aligned(cases: Mapping[str, Any], ids: Sequence[str]) -> Dict[str, Any]:
    """``cases`` reordered to ``ids``."""
    pos = {str(i): j for j, i in enumerate(cases["ids"])}
    idx = np.array([pos[str(i)] for i in ids], dtype=np.int64)
    return {"kind": cases["kind"], "arrays": {k: np.asarray(v)[idx] for k, v in cases["arrays"].items()}}


def paired_delta(
    model_runs: Sequence[Mapping[str, Any]],
    base_runs: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    lower_better: bool = False,
) -> Dict[str, Any]:
    """Delta (model - baseline) of one metric, its 95 % paired bootstrap CI and the verdict.

    ``model_runs`` / ``base_runs``: the ``_cases`` payloads of the two models,
    one per seed, in the same seed order. Test patients are the intersection
    of all runs' ids (normally the same test split). Draws whose metric is
    undefined (e.g. one class in an AUC resample) are left out.
    """
    if not model_runs or len(model_runs) != len(base_runs):
        raise ValueError(f"runs: need equally many seeds per model, got {len(model_runs)} and {len(base_runs)}")
    ids = [str(i) for i in model_runs[0]["ids"]]
    for run in list(model_runs) + list(base_runs):
        keep = {str(i) for i in run["ids"]}
        ids = [i for i in ids if i in keep]
    if len(ids) < 2:
        raise ValueError("runs: fewer than 2 test patients in common")
    runs_m = [_aligned(r, ids) for r in model_runs]
    runs_b = [_aligned(r, ids) for r in base_runs]
    n = len(ids)

    def delta(index: Optional[np.ndarray]) -> float:
        m = [metric_on(r, index) for r in runs_m]
        b = [metric_on(r, index) for r in runs_b]
        if not (np.isfinite(m).any() and np.isfinite(b).any()):
            return float("nan")
        return float(np.nanmean(m) - np.nanmean(b))

    point = delta(None)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(int(n_boot), n))
    if all(r["kind"] == "mean" for r in runs_m + runs_b):
        # the mean is linear: all draws at once
        sm = np.stack([np.asarray(r["arrays"]["score"], np.float64) for r in runs_m])  # [S, N]
        sb = np.stack([np.asarray(r["arrays"]["score"], np.float64) for r in runs_b])
        with np.errstate(invalid="ignore"):
            dm = np.nanmean(np.nanmean(sm[:, draws], axis=2), axis=0)
            db = np.nanmean(np.nanmean(sb[:, draws], axis=2), axis=0)
        boots = dm - db
    else:
        boots = np.array([delta(d) for d in draws])
    boots = boots[np.isfinite(boots)]
    if len(boots) < max(20, n_boot // 10) or not np.isfinite(point):
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    return {"delta": point, "lo": lo, "hi": hi, "verdict": verdict(lo, hi, lower_better=lower_better),
            "n_test": n, "n_seeds": len(model_runs), "n_boot_valid": int(len(boots))}


#: Differences this small are rounding, not an effect (two models with the same outputs give +-1e-17).
VERDICT_TOLERANCE = 1e-9


def verdict(lo: float, hi: float, *, lower_better: bool = False) -> str:
    """``helps`` / ``hurts`` / ``no detectable difference`` from a CI of (model - baseline).

    An interval must clear zero by more than :data:`VERDICT_TOLERANCE`: two
    models with identical outputs differ only by floating-point rounding.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no detectable difference"
    t = VERDICT_TOLERANCE
    better, worse = (hi < -t, lo > t) if lower_better else (lo > t, hi < -t)
    return "helps" if better else "hurts" if worse else "no detectable difference"


def group_key(row: Mapping[str, Any]) -> Tuple:
    return tuple(row.get(k) for k in ("task", "protocol", "target", "label_fraction"))


def add_paired_deltas(
    rows: Sequence[Mapping[str, Any]],
    summary: List[Dict[str, Any]],
    twins: Mapping[str, str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """Fill ``delta_vs_random``, ``delta_lo``, ``delta_hi``, ``verdict`` (and ``compared_with``) into ``summary``.

    ``twins``: ``{model name: name of the row it is compared with}`` (a
    pretrained checkpoint -> its random-init twin; an ablation -> its full
    method). Rows pair by (task, protocol, target, label fraction) and seed;
    a summary row without per-case outputs, or without a twin, is left as is.
    """
    per: Dict[Tuple, Dict[Any, Mapping[str, Any]]] = {}
    for r in rows:
        if CASES_KEY in r:
            per.setdefault((r["model"],) + group_key(r), {})[r.get("seed")] = r[CASES_KEY]
    for s in summary:
        twin = twins.get(str(s["model"]))
        if not twin:
            continue
        mine = per.get((s["model"],) + group_key(s))
        theirs = per.get((twin,) + group_key(s))
        if not mine or not theirs:
            continue
        seeds = [k for k in mine if k in theirs]
        if not seeds:
            continue
        metric = str(mine[seeds[0]].get("metric", ""))
        res = paired_delta([mine[k] for k in seeds], [theirs[k] for k in seeds], n_boot=n_boot, seed=seed,
                           lower_better=lower_is_better(metric))
        s.update({"compared_with": twin, "delta_metric": metric, "delta_vs_random": res["delta"],
                  "delta_lo": res["lo"], "delta_hi": res["hi"], "verdict": res["verdict"], "n_test": res["n_test"]})
    return summary
