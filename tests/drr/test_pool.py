"""The chunked helper threads: the same result as one thread, and a late helper neither holds up nor overwrites."""

from __future__ import annotations

import threading
import time

import numpy as np

from medssl.drr import Projector, pose_rays, standard_poses
from medssl.drr import pool


def _square(values):
    def fn(rays, dest):
        dest[rays] = values[rays] ** 2

    return fn


def test_chunks_cover_every_ray_once_in_any_order():
    values = np.random.default_rng(0).random(5000)
    order = np.random.default_rng(1).permutation(5000)
    out = np.full(5000, np.nan)
    pool.run_chunks(_square(values), order, out, threads=3)
    assert np.array_equal(out, values ** 2)


def test_a_late_helper_does_not_hold_up_the_call_nor_write_after_it():
    values = np.arange(4096, dtype=np.float64)
    release = threading.Event()
    helper_calls = []

    def fn(rays, dest):
        if threading.current_thread().name == "medssl-drr-helper":
            helper_calls.append(len(rays))
            release.wait(5.0)  # a helper the OS does not run for a while
        dest[rays] = values[rays] + 1.0

    out = np.zeros(4096)
    t = time.perf_counter()
    pool.run_chunks(fn, np.arange(4096), out, threads=2)
    assert time.perf_counter() - t < 2.0  # the calling thread did the helper's chunk itself
    assert np.array_equal(out, values + 1.0)
    out[:] = -1.0  # the caller owns the array again
    release.set()
    time.sleep(0.2)
    assert np.all(out == -1.0)


def test_parallel_projector_equals_serial():
    rng = np.random.default_rng(2)
    dens = rng.random((20, 24, 18)).astype(np.float32)
    aff = np.diag([1.5, 1.2, 2.0, 1.0])
    pose = standard_poses(["lateral"], dens.shape, aff, size=64)[0]
    src, tgt = pose_rays(pose, dens.shape, aff)
    want = Projector(dens, aff, parallel=False).line_integrals(src, tgt)
    for mode in ("siddon", "trilinear"):
        serial = Projector(dens, aff, parallel=False).line_integrals(src, tgt, mode=mode)
        par = Projector(dens, aff, parallel=True)
        for _ in range(5):
            assert np.array_equal(par.line_integrals(src, tgt, mode=mode), serial)
    assert np.array_equal(Projector(dens, aff).line_integrals(src, tgt), want)
