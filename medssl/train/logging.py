"""Run logs: a CSV file per stream, TensorBoard scalars, a tqdm progress bar and ``curves.png``.

All writers are used on rank 0 only. On resume the CSV keeps the rows of
steps already done and drops rows at or after the resume step (they are
about to be computed again), so a resumed run's ``metrics.csv`` reads as an
uninterrupted one.

The progress bar counts optimiser steps, or, when a time budget is set and
the run looks set to end by it (not by ``max_steps``), seconds of the budget
(with the step count and loss beside it).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..io.atomic import atomic_path

__all__ = ["CSVLog", "RunLogger", "write_curves", "read_csv"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


class CSVLog:
    """Append rows of ``{column: value}``; the columns are fixed by the first row.

    Keys that first appear later are dropped with one warning (a CSV has one header).
    """

    def __init__(self, path: Path, *, resume_step: Optional[int] = None) -> None:
        self.path = Path(path)
        self.columns: Optional[List[str]] = None
        self._warned: set = set()
        if resume_step is not None and self.path.is_file():
            self._truncate(resume_step)
        elif self.path.exists():
            self.path.unlink()

    def _truncate(self, step: int) -> None:
        """Keep the rows of steps before ``step``; a damaged line is left out, never lost.

        Lines that cannot be rows of this file (garbage, another column
        count, a step that is not a number, NUL bytes, bytes that are not
        UTF-8) are dropped from the log with a warning naming the file and
        the first such line, and the file as it was is kept next to it as
        ``<name>.damaged`` (``.damaged.1``, ... when that exists).
        """
        raw = self.path.read_bytes()
        text = raw.decode("utf-8", errors="replace").replace("\0", "")
        rows = list(csv.reader(text.splitlines()))
        header = rows[0] if rows else None
        if not header:
            return
        if "step" not in header:
            backup = self._keep_damaged(raw)
            self.path.unlink()
            warnings.warn(f"{self.path}: no 'step' column in its header line, so its rows cannot be matched to the "
                          f"resumed run; it was moved to {backup.name} and a new log begins")
            return
        col = header.index("step")
        keep, bad = [], []
        for n, row in enumerate(rows[1:], 2):
            if not row:
                continue
            try:
                ok = len(row) == len(header)
                row_step = int(row[col]) if ok else None
            except ValueError:
                ok = False
            if not ok:
                bad.append(n)
            elif row_step < step:
                keep.append(row)
        if bad or "\ufffd" in text or b"\0" in raw:
            backup = self._keep_damaged(raw)
            first = f" (first: line {bad[0]})" if bad else ""
            warnings.warn(f"{self.path}: {len(bad)} damaged line(s){first} left out of the log on resume; "
                          f"the file as it was is kept as {backup.name}")
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                w.writerows(keep)
        self.columns = header

    def _keep_damaged(self, raw: bytes) -> Path:
        backup = self.path.with_name(self.path.name + ".damaged")
        n = 0
        while backup.exists():
            n += 1
            backup = self.path.with_name(f"{self.path.name}.damaged.{n}")
        backup.write_bytes(raw)
        return backup

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        extra = set(row) - set(self.columns) - self._warned
        if extra:
            warnings.warn(f"{self.path.name}: new columns {sorted(extra)} are not logged (the header is fixed)")
            self._warned |= extra
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c, "")) for c in self.columns])


class RunLogger:
    """``metrics.csv`` (one row per logged optimiser step), ``knn.csv``, TensorBoard and the progress bar.

    ``time_budget_s`` and ``elapsed_s`` (wall-clock before this session, on
    resume) set the progress bar's unit: seconds of the budget when a budget
    is set, steps otherwise; a budgeted run whose steps would reach
    ``max_steps`` well before the budget switches to steps (once, after a few
    steps).
    """

    SWITCH_AFTER_STEPS = 3  # steps measured before a budgeted bar may switch to steps

    def __init__(self, run_dir: Path, *, start_step: int, max_steps: int, tensorboard: bool = True, progress_bar: bool = True, resume: bool = False,
                 time_budget_s: Optional[float] = None, elapsed_s: float = 0.0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rs = start_step if resume else None
        self.metrics = CSVLog(self.run_dir / "metrics.csv", resume_step=rs)
        self.knn = CSVLog(self.run_dir / "knn.csv", resume_step=rs)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=start_step if resume else None)
        self.start_step, self.max_steps = int(start_step), int(max_steps)
        self.budget = float(time_budget_s) if time_budget_s is not None and time_budget_s > 0 else None
        self.elapsed0 = float(elapsed_s)
        self.unit = "s" if self.budget is not None else "step"
        self.bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            if self.unit == "s":
                self.bar = tqdm(total=self.budget, initial=min(self.elapsed0, self.budget), unit="s", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
            else:
                self.bar = tqdm(total=max_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def progress(self, steps_done: int, elapsed_s: float, *, loss: Optional[float] = None, lr: Optional[float] = None) -> None:
        """Move the bar to ``steps_done`` optimiser steps / ``elapsed_s`` seconds of wall-clock (whole run)."""
        if self.bar is None:
            return
        post: Dict[str, str] = {}
        if self.unit == "s":
            n_session = steps_done - self.start_step
            if n_session >= self.SWITCH_AFTER_STEPS and self.budget is not None:
                per_step = (elapsed_s - self.elapsed0) / n_session
                if elapsed_s + per_step * (self.max_steps - steps_done) < 0.9 * self.budget:  # max_steps ends the run
                    self.unit = "step"
                    self.bar.reset(total=self.max_steps)
                    self.bar.unit, self.bar.bar_format = "step", None
                    self.bar.update(steps_done)
        if self.unit == "s":
            assert self.budget is not None
            self.bar.update(max(min(elapsed_s, self.budget) - self.bar.n, 0.0))
            post["step"] = f"{steps_done}"
        else:
            self.bar.update(steps_done - self.bar.n)
        if loss is not None:
            post["loss"] = f"{loss:.4g}"
        if lr is not None and self.unit == "step":
            post["lr"] = f"{lr:.3g}"
        self.bar.set_postfix(post, refresh=False)

    def log_step(self, row: Dict[str, Any]) -> None:
        self.metrics.write(row)
        step = int(row["step"])
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def log_eval(self, row: Dict[str, Any]) -> None:
        self.knn.write(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"eval/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def read_csv(path: Path) -> List[Dict[str, str]]:
    """The rows of a log CSV (``[]`` when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _column(rows: List[Dict[str, str]], key: str) -> tuple:
    xs, ys = [], []
    for r in rows:
        try:
            x, y = float(r["step"]), float(r.get(key) or "nan")
        except (KeyError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def write_curves(run_dir: Path, *, label: Optional[str] = None, path: Optional[Path] = None) -> Optional[Path]:
    """``run_dir/curves.png``: the training loss and the online probe's metric against the step.

    Reads ``metrics.csv`` and ``knn.csv`` of ``run_dir``. The probe panel shows
    ``knn_acc`` with ``knn_majority`` as a dashed line, or ``knn_spearman``
    with 0 (chance) dashed; it is left out when there are no probe rows.
    Written atomically; any failure (no matplotlib, unreadable logs) is a
    warning and returns None, never an exception.
    """
    run_dir = Path(run_dir)
    out = Path(path) if path is not None else run_dir / "curves.png"
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state

        steps, losses = _column(read_csv(run_dir / "metrics.csv"), "loss")
        knn = read_csv(run_dir / "knn.csv")
        metric = next((m for m in ("knn_acc", "knn_spearman") if knn and m in knn[0]), None)
        fig = Figure(figsize=(7.0, 6.0 if metric else 3.4), layout="constrained")
        axes = fig.subplots(2 if metric else 1, 1, sharex=True, squeeze=False)[:, 0]
        ax = axes[0]
        ax.plot(steps, losses, lw=0.8, color="C0", alpha=0.35 if len(losses) >= 100 else 1.0, label="loss")
        if len(losses) >= 100:  # a running mean over 2 % of the logged steps
            w = len(losses) // 50
            c = [0.0]
            for v in losses:
                c.append(c[-1] + v)
            ax.plot(steps[w - 1 :], [(c[i + w] - c[i]) / w for i in range(len(losses) - w + 1)], lw=1.5, color="C0",
                    label=f"running mean ({w} steps)")
            ax.legend(loc="best", fontsize=8)
        ax.set_ylabel("training loss")
        ax.set_title(run_dir.name)
        ax.grid(alpha=0.3)
        if metric:
            ax = axes[1]
            xs, ys = _column(knn, metric)
            what = f" ({label})" if label else ""
            if metric == "knn_acc":
                ax.plot(xs, ys, "o-", ms=3, color="C1", label=f"kNN accuracy{what}")
                mx, my = _column(knn, "knn_majority")
                if my:
                    ax.plot(mx, my, "--", color="grey", label="majority-class share")
                ax.set_ylabel("probe accuracy")
            else:
                ax.plot(xs, ys, "o-", ms=3, color="C1", label=f"kNN regression Spearman{what}")
                ax.axhline(0.0, ls="--", color="grey", label="chance (0)")
                ax.set_ylabel("probe Spearman")
            ax.legend(loc="best", fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("optimiser step")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        return out
    except Exception as exc:  # a plot must never end a training run
        warnings.warn(f"{out}: not written ({type(exc).__name__}: {exc})")
        return None
