"""A damaged metrics.csv on resume: the damaged lines are left out with a warning, the file kept as it was."""

from __future__ import annotations

import csv
import json

import pytest

from medssl.train.logging import CSVLog
from medssl.train.trainer import fit

from train.toy import toy_config


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("garbage", [b"this is not a row\n", b"\x00\x00\xff\xfe garbage,,,,,,,,,,\n",
                                     b"notanumber,1,2,3,4,5\n"])
def test_resume_with_a_garbage_line(tmp_path, garbage):
    run = tmp_path / "run"
    fit(toy_config(run, **{"trainer.max_steps": 4, "trainer.checkpoint_every": 2}), resume=False)
    metrics = run / "metrics.csv"
    before = metrics.read_bytes()
    lines = before.splitlines(keepends=True)
    damaged = b"".join(lines[:3] + [garbage] + lines[3:])
    metrics.write_bytes(damaged)
    with pytest.warns(UserWarning, match=r"metrics\.csv: \d+ damaged line\(s\).*kept as metrics\.csv\.damaged"):
        summary = fit(toy_config(run, **{"trainer.max_steps": 6, "trainer.checkpoint_every": 2}))
    assert summary["steps_done"] == 6
    assert [int(r["step"]) for r in rows(metrics)] == list(range(6))  # every step once, the old rows kept
    assert (run / "metrics.csv.damaged").read_bytes() == damaged  # nothing lost
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 6


def test_header_without_step_is_moved_aside(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("garbage header\n1\n2\n")
    (tmp_path / "metrics.csv.damaged").write_text("an older one")
    with pytest.warns(UserWarning, match=r"no 'step' column.*metrics\.csv\.damaged\.1"):
        log = CSVLog(path, resume_step=3)
    assert not path.exists() and (tmp_path / "metrics.csv.damaged.1").read_text() == "garbage header\n1\n2\n"
    log.write({"step": 3, "loss": 1.0})
    assert rows(path) == [{"step": "3", "loss": "1.0"}]


def test_clean_log_is_truncated_without_warning(tmp_path, recwarn):
    path = tmp_path / "m.csv"
    path.write_text("step,loss\n0,1.0\n1,0.5\n2,0.25\n")
    CSVLog(path, resume_step=2)
    assert rows(path) == [{"step": "0", "loss": "1.0"}, {"step": "1", "loss": "0.5"}]
    assert not recwarn.list and not (tmp_path / "m.csv.damaged").exists()
