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


def deterministic_state_dict(keys_shapes):
    """Weights by the rule in shared/reference/README.md, from a [[key, shape], ...] list."""
    import numpy as np

    out = {}
    for j, (key, shape) in enumerate(keys_shapes):
        shape = tuple(shape)
        n = int(np.prod(shape)) if shape else 1
        base = np.sin(0.731 * np.arange(n, dtype=np.float64) + 1.3 * j)
        if key.endswith("running_var"):
            v = np.ones(n)
        elif key.endswith("running_mean") or key.endswith("num_batches_tracked"):
            v = np.zeros(n)
        elif len(shape) == 1 and key.endswith("weight"):
            v = 1 + 0.1 * base
        elif len(shape) <= 1 or shape[0] == 1:
            v = 0.02 * base
        else:
            v = base / np.sqrt(np.prod(shape[1:]))
        t = torch.from_numpy(v.reshape(shape))
        out[key] = t.long() if key.endswith("num_batches_tracked") else t.float()
    return out


def reference_input(shape, frequency):
    """x = 0.5 + 0.5 sin(f k), k = 0..N-1, reshaped to ``shape`` (float32)."""
    import numpy as np

    n = int(np.prod(shape))
    return torch.from_numpy((0.5 + 0.5 * np.sin(frequency * np.arange(n, dtype=np.float64))).reshape(shape)).float()


def write_tiny_ct(path, seed=0):
    """A 20 x 16 x 24 HU volume (air around a soft-tissue box with a bone bar) saved as NIfTI; returns (hu, affine)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    hu = np.full((20, 16, 24), -1000.0, np.float32)
    hu[3:17, 3:13, 2:22] = 40.0 + rng.normal(size=(14, 10, 20)) * 10
    hu[9:11, 9:12, 2:22] = 900.0
    aff = np.diag([2.0, 2.5, 2.0, 1.0])
    aff[:3, 3] = [-20.0, -18.0, -23.0]
    nib.save(nib.Nifti1Image(hu, aff), str(path))
    return hu, aff


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """A 4-patient tiny synthetic cohort with X-rays, preprocessed: (manifest path, cache path).

    Built once per test process; tests must not modify it.
    """
    from medssl.preprocess import preprocess_manifest
    from medssl.synth import generate_cohort

    root = tmp_path_factory.mktemp("tiny_cohort")
    manifest = generate_cohort(root / "cohort", n=4, seed=0, preset="tiny", progress=False, xrays=True,
                               n_unpaired=2)
    cache = root / "cache"
    preprocess_manifest(manifest, cache, progress=False)
    return manifest, cache
