"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def drasclr_patches(tiny_cohort, tmp_path_factory):
    """A DrasCLR patch set (16^3 patches) of the tiny cohort, prepared once per session."""
    from medssl.anatomy.patch_source import AnatomicalPatchSource

    root = tmp_path_factory.mktemp("drasclr_patches") / "p16_s13"
    AnatomicalPatchSource(cache=tiny_cohort[1], root=root, patch=16, step=13, progress=False)
    return root
