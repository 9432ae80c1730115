"""Shared fixtures: the reference-value folder and small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of reference values computed by peer libraries (skips when absent)."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference values not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


def load_reference(name: str):
    """Load ``shared/reference/NAME`` with numpy (no pickle), or skip the test."""
    import numpy as np

    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference file not found: {path}")
    return np.load(path, allow_pickle=False)
