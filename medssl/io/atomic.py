"""Atomic file writes: write to a temporary file in the target's folder, then rename.

A reader (or a resumed run) sees either the old file or the complete new one,
never a half-written file, and a failed write leaves the old file as it was
and no temporary file behind. Every writer in medssl goes through
:func:`atomic_path`.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

PathLike = Union[str, Path]


@contextmanager
def atomic_path(path: PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.npy``,
    ``.png``), so writers that pick a format from the name behave as for
    ``path`` itself. The parent folder is created. ``fsync=True`` flushes the
    file to disk before the rename. On an exception the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}.", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines written as given)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
    return Path(path)


def write_json_atomic(path: PathLike, obj: Any, indent: int = 1, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))


def save_npy_atomic(path: PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically (no pickled object arrays)."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)
    return Path(path)
