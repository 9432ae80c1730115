"""Fixtures for the preprocessing tests: the tiny-cohort writers of cohort.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("medssl_test_cohort", Path(__file__).with_name("cohort.py"))
cohort_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cohort_mod)


@pytest.fixture(scope="session")
def cohort():
    """The module of cohort writers (phantom_ct, add_volume, write_manifest, ct_cohort...)."""
    return cohort_mod
