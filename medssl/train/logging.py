"""Run logs: a CSV file per stream, TensorBoard scalars and a tqdm progress bar.

All writers are used on rank 0 only. On resume the CSV keeps the rows of
steps already done and drops rows at or after the resume step (they are
about to be computed again), so a resumed run's ``metrics.csv`` reads as an
uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..io.atomic import atomic_path

__all__ = ["CSVLog", "RunLogger"]


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
        with open(self.path, newline="") as fh:
            rows = list(csv.DictReader(fh))
            fh.seek(0)
            header = next(csv.reader(fh), None)
        if not header:
            return
        keep = [r for r in rows if int(r["step"]) < step]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=header)
                w.writeheader()
                w.writerows(keep)
        self.columns = header

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
    """``metrics.csv`` (one row per optimiser step), ``knn.csv``, TensorBoard and the progress bar."""

    def __init__(self, run_dir: Path, *, start_step: int, max_steps: int, tensorboard: bool = True, progress_bar: bool = True, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rs = start_step if resume else None
        self.metrics = CSVLog(self.run_dir / "metrics.csv", resume_step=rs)
        self.knn = CSVLog(self.run_dir / "knn.csv", resume_step=rs)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=start_step if resume else None)
        self.bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log_step(self, row: Dict[str, Any]) -> None:
        self.metrics.write(row)
        step = int(row["step"])
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.3g}", refresh=False)

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
