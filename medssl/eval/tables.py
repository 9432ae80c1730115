"""Results tables: per-seed rows -> mean +- sd, written as CSV, Markdown and PNG plots.

Files written to ``out``:

- ``results_per_seed.csv``: one row per (model, task, protocol, label fraction, seed);
- ``results.csv``: one row per (model, task, protocol, target, label fraction) with
  ``<metric>_mean``, ``<metric>_sd`` (sample sd, ddof=1; 0 for one seed) and ``n_seeds``;
- ``results.md``: the header (split rule, seeds, command, version, machine,
  wall-clock), the wide table (rows = models, columns = tasks, cells = the
  headline metric with its paired delta [95 % CI] and verdict), then one
  table per task with every metric, cells ``mean +- sd``;
- ``plot_<task>.png``: the task's primary metric per model and protocol (bars,
  sd as error bars) or, for a label-efficiency sweep, against the label fraction;
- ``forest.png``: the paired deltas with their intervals, one line per
  compared row and task.

Rows compared with a twin (a pretrained checkpoint with its random-init row,
an ablation with its full method; see :mod:`medssl.eval.paired`) carry
``compared_with``, ``delta_vs_random``, ``delta_lo``, ``delta_hi`` and
``verdict`` in ``results.csv``. A probe whose test predictions are all one
class gets ``one_class_mean`` > 0 (the share of seeds where it happened) and
is marked in the tables.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from ..io.atomic import atomic_path, write_text_atomic
from .paired import add_paired_deltas

GROUP_KEYS = ("model", "task", "protocol", "target", "label_fraction")
ROW_KEYS = GROUP_KEYS + ("n_labelled", "seed", "sweep")


def metric_names(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Numeric metric columns in first-seen order."""
    names: List[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in ROW_KEYS and k not in names and isinstance(v, (int, float, np.floating)):
                names.append(k)
    return names


def summarise(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and sd over seeds per group; NaN values (undefined metric for a seed) are left out."""
    groups: "OrderedDict[tuple, List[Mapping[str, Any]]]" = OrderedDict()
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        s: Dict[str, Any] = dict(zip(GROUP_KEYS, key))
        s["n_labelled"] = rs[0].get("n_labelled")
        s["n_seeds"] = len(rs)
        s["sweep"] = bool(rs[0].get("sweep", False))
        for m in metric_names(rs):
            v = np.array([float(r[m]) for r in rs if m in r], dtype=np.float64)
            v = v[np.isfinite(v)]
            s[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            s[f"{m}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else float("nan"))
        out.append(s)
    return out


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not str(k).startswith("_")]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in cols})


def _fmt(mean: float, sd: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    digits = 3 if abs(mean) < 100 else 1
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def column_name(s: Mapping[str, Any]) -> str:
    """The wide table's column of a summary row: task, protocol, target and label fraction."""
    parts = [str(s["task"]), str(s["protocol"])]
    if s.get("target") not in (None, "", "label"):
        parts.append(str(s["target"]))
    return " / ".join(parts) + f" @ {s['label_fraction']:.0%}"


def fmt_ci(s: Mapping[str, Any]) -> str:
    """``+0.052 [+0.011, +0.093]``, or '' for a row without a paired comparison."""
    d = s.get("delta_vs_random")
    if d is None or not isinstance(d, float) or math.isnan(d):
        return ""
    lo, hi = s.get("delta_lo", float("nan")), s.get("delta_hi", float("nan"))
    ci = "[n/a]" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
    return f"{d:+.3f} {ci}"


def fmt_delta(s: Mapping[str, Any]) -> str:
    """``+0.052 [+0.011, +0.093] helps``, or '' for a row without a paired comparison."""
    ci = fmt_ci(s)
    return f"{ci} {s.get('verdict', '')}" if ci else ""


def one_class_flag(s: Mapping[str, Any]) -> str:
    """`` ⚠ one class`` for a summary row whose probe predicted one class for every test case in some seed."""
    share = s.get("one_class_mean")
    return " ⚠ one class" if isinstance(share, float) and share > 0 else ""


def wide_table(summary: Sequence[Mapping[str, Any]], primary: Mapping[str, str]) -> List[str]:
    """Rows = models, columns = (task, protocol, target, fraction); cells = headline metric (delta [CI] verdict)."""
    cols = list(OrderedDict.fromkeys(column_name(s) for s in summary if primary.get(s["task"])))
    if not cols:
        return []
    models = list(OrderedDict.fromkeys(str(s["model"]) for s in summary))
    cell: Dict[tuple, str] = {}
    for s in summary:
        metric = primary.get(s["task"])
        if not metric:
            continue
        v = s.get(f"{metric}_mean", float("nan"))
        txt = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
        d = fmt_delta(s)
        cell[(str(s["model"]), column_name(s))] = txt + (f" ({d})" if d else "") + one_class_flag(s)
    metrics = {c: primary.get(next(s["task"] for s in summary if column_name(s) == c), "") for c in cols}
    lines = ["## Overview", "",
             "Headline metric per task (mean over seeds); in brackets the paired delta against the row named in "
             "`compared_with` (random init, or the full method for an ablation) with its 95 % bootstrap CI over "
             "test patients (seeds pooled) and the verdict.", "",
             "| model | " + " | ".join(f"{c} ({metrics[c]})" for c in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cell.get((m, c), "") for c in cols) + " |")
    lines.append("")
    return lines


def markdown(summary: Sequence[Mapping[str, Any]], header: Mapping[str, Any], metrics_per_task: Mapping[str, List[str]],
             primary: Mapping[str, str] | None = None) -> str:
    """The Markdown report: header lines, the wide table, then one table per task."""
    lines = ["# Evaluation results", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines.append("")
    lines += wide_table(summary, primary or {})
    for task in OrderedDict.fromkeys(s["task"] for s in summary):
        rs = [s for s in summary if s["task"] == task]
        ms = metrics_per_task.get(task) or sorted({k[:-5] for s in rs for k in s if k.endswith("_mean")} - {"one_class"})
        paired = any(fmt_delta(s) for s in rs)
        cols = ["model", "protocol", "target", "labels", "seeds"] + ms + (["delta [95 % CI] verdict"] if paired else [])
        lines += [f"## {task}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for s in rs:
            lab = f"{s['label_fraction']:.0%} ({s['n_labelled']})"
            cells = [str(s["model"]) + one_class_flag(s), str(s["protocol"]), str(s["target"]), lab, str(s["n_seeds"])]
            cells += [_fmt(s.get(f"{m}_mean", float("nan")), s.get(f"{m}_sd", float("nan"))) for m in ms]
            if paired:
                d = fmt_delta(s)
                cells.append(f"{d} vs {s['compared_with']}" if d else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def forest_plot(summary: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Paired deltas with 95 % CIs, one line per compared (row, task column); green helps, red hurts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [s for s in summary if isinstance(s.get("delta_vs_random"), float) and not math.isnan(s["delta_vs_random"])]
    colours = {"helps": "#2ca02c", "hurts": "#d62728"}
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * max(1, len(rs))), dpi=100)
    for k, s in enumerate(reversed(rs)):
        d, lo, hi = s["delta_vs_random"], s.get("delta_lo", float("nan")), s.get("delta_hi", float("nan"))
        c = colours.get(str(s.get("verdict")), "#555555")
        if not math.isnan(lo):
            ax.plot([lo, hi], [k, k], color=c, lw=2)
        ax.plot([d], [k], "o", color=c)
    ax.axvline(0.0, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(rs)))
    ax.set_yticklabels([f"{s['model']} vs {s.get('compared_with', '')}: {column_name(s)} ({s.get('delta_metric', '')})"
                        for s in reversed(rs)], fontsize=7)
    ax.set_xlabel("paired delta (95 % bootstrap CI over test patients)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plot_task(summary: Sequence[Mapping[str, Any]], task: str, metric: str, path: Path) -> Path:
    """Bar chart (one label fraction) or line plot (label-efficiency sweep) of ``metric`` with sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [s for s in summary if s["task"] == task and f"{metric}_mean" in s]
    series: "OrderedDict[str, List[Mapping[str, Any]]]" = OrderedDict()
    for s in rs:
        series.setdefault(f"{s['model']} / {s['protocol']}", []).append(s)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    sweep = len({s["label_fraction"] for s in rs}) > 1
    if sweep:
        for name, pts in series.items():
            pts = sorted(pts, key=lambda p: p["label_fraction"])
            x = np.array([100 * p["label_fraction"] for p in pts])
            m = np.array([p[f"{metric}_mean"] for p in pts])
            sd = np.array([p[f"{metric}_sd"] for p in pts])
            ax.plot(x, m, marker="o", label=name)
            ax.fill_between(x, m - sd, m + sd, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training cases (%)")
    else:
        names = list(series)
        m = [series[n][0][f"{metric}_mean"] for n in names]
        sd = [series[n][0][f"{metric}_sd"] for n in names]
        ax.bar(range(len(names)), m, yerr=sd, capsize=4, color="#4c78a8")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± sd over seeds)")
    ax.set_title(task)
    if sweep:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_results(
    rows: Sequence[Mapping[str, Any]],
    out: str | Path,
    *,
    header: Mapping[str, Any],
    primary: Mapping[str, str],
    metrics_per_task: Mapping[str, List[str]] | None = None,
    twins: Mapping[str, str] | None = None,
    n_boot: int = 2000,
) -> Dict[str, Any]:
    """Write the CSVs, Markdown and plots; returns ``{"summary": [...], "files": [...]}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    add_paired_deltas(rows, summary, twins or {}, n_boot=n_boot)
    _write_csv(out / "results_per_seed.csv", rows)
    _write_csv(out / "results.csv", summary)
    md = markdown(summary, header, metrics_per_task or {}, primary=primary)
    write_text_atomic(out / "results.md", md + "\n")
    files = [out / "results.csv", out / "results_per_seed.csv", out / "results.md"]
    if any(s.get("verdict") for s in summary):
        files.append(forest_plot(summary, out / "forest.png"))
    for task in OrderedDict.fromkeys(s["task"] for s in summary):
        metric = primary.get(task)
        if metric and any(f"{metric}_mean" in s for s in summary if s["task"] == task):
            files.append(plot_task(summary, task, metric, out / f"plot_{task}.png"))
    return {"summary": summary, "files": files, "markdown": md}
