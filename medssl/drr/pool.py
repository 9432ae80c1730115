"""Helper threads that share the calling thread's kernel work, chunk by chunk, and never hold it up.

``prange`` splits a loop evenly over the numba threads and returns when the
slowest is done. On a machine whose cores other processes also use, the
thread that lands on a busy core runs its half late (a scheduler time slice
or more), so a parallel call of a few milliseconds can take longer than the
same work in one thread. Here the rays are cut into chunks that the calling
thread and the helpers take one at a time; when none is left to take, the
calling thread does again, itself, any chunk a helper has taken but not
finished (the kernels are deterministic, so it writes the same values), and
returns. A helper writes into its own buffer and copies a chunk into the
output only while the call is still open and nobody has finished that chunk.
So a call costs at most about what the calling thread alone would take, and
about 1 / threads of it when the helpers get their cores.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, List, Optional

import numpy as np
from numba import get_num_threads

#: Chunks per thread and call (smaller chunks: finer sharing, more calls into the kernel).
CHUNKS_PER_THREAD = 8
#: Rays below which a call runs in the calling thread only.
MIN_CHUNK = 256


class _Job:
    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], None], chunks: List[np.ndarray], out: np.ndarray):
        self.fn, self.chunks, self.out = fn, chunks, out
        self.lock = threading.Lock()
        self.next = 0
        self.done = [False] * len(chunks)
        self.closed = False

    def take(self) -> Optional[int]:
        with self.lock:
            if self.closed or self.next >= len(self.chunks):
                return None
            self.next += 1
            return self.next - 1


class _Helpers:
    """``n`` daemon threads waiting for jobs (made again after a fork, whose child has none of them)."""

    def __init__(self, n: int):
        self.n, self.pid = n, os.getpid()
        self.cond = threading.Condition()
        self.job: Optional[_Job] = None
        self.serial = 0
        for _ in range(n):
            threading.Thread(target=self._loop, daemon=True, name="medssl-drr-helper").start()

    def _loop(self) -> None:
        seen = 0
        scratch = np.empty(0)
        while True:
            with self.cond:
                while self.job is None or self.serial == seen:
                    self.cond.wait()
                job, seen = self.job, self.serial
            if scratch.shape[0] < job.out.shape[0]:
                scratch = np.empty(job.out.shape[0])
            while (i := job.take()) is not None:
                rays = job.chunks[i]
                job.fn(rays, scratch)
                with job.lock:
                    if not job.closed and not job.done[i]:
                        job.out[rays] = scratch[rays]
                        job.done[i] = True

    def run(self, job: _Job) -> None:
        with self.cond:
            self.job = job
            self.serial += 1
            self.cond.notify_all()
        while (i := job.take()) is not None:
            job.fn(job.chunks[i], job.out)
            with job.lock:
                job.done[i] = True
        for i in range(len(job.chunks)):  # chunks a helper took and has not finished: done here again
            with job.lock:
                if job.done[i]:
                    continue
            job.fn(job.chunks[i], job.out)
            with job.lock:
                job.done[i] = True
        with job.lock:
            job.closed = True
        with self.cond:
            if self.job is job:
                self.job = None


_helpers: Optional[_Helpers] = None
_helpers_lock = threading.Lock()


def _get_helpers(n: int) -> _Helpers:
    global _helpers
    with _helpers_lock:
        if _helpers is None or _helpers.pid != os.getpid() or _helpers.n != n:
            _helpers = _Helpers(n)
        return _helpers


def run_chunks(fn: Callable[[np.ndarray, np.ndarray], None], order: np.ndarray, out: np.ndarray,
               threads: Optional[int] = None) -> None:
    """Run ``fn(rays, dest)`` over chunks of ``order`` with the calling thread and ``threads - 1`` helpers.

    ``fn`` must release the GIL (a ``nogil`` kernel), write ``dest[r]`` for each
    ray ``r`` of its chunk and nothing else, and give the same values every
    time it is called on the same chunk. ``threads`` defaults to numba's
    thread count; 1 (or a small ``order``) runs ``fn`` once, here.
    """
    n = get_num_threads() if threads is None else int(threads)
    size = max(MIN_CHUNK, -(-order.shape[0] // (max(n, 1) * CHUNKS_PER_THREAD)))
    if n <= 1 or order.shape[0] <= size:
        fn(order, out)
        return
    chunks = [order[lo:lo + size] for lo in range(0, order.shape[0], size)]
    _get_helpers(n - 1).run(_Job(fn, chunks, out))
