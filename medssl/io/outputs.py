"""Output paths that must not be inputs: one check for every command that writes files.

A command that reads files and writes others (``export``, ``import-weights``,
``preprocess``) calls these before it writes anything, so that a mistyped
``--out`` can never replace the file it was meant to read. Each failure is a
:class:`~medssl.errors.ConfigError` naming the option and both paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

from ..errors import ConfigError

PathLike = Union[str, Path]


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: same resolved path, or (when both exist) the same
    file through a link."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    if pa == pb:
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def check_output_not_input(option: str, outputs: Iterable[PathLike], inputs: Iterable[PathLike]) -> None:
    """Raise :class:`ConfigError` when one of the files a command writes is one of the files it reads."""
    inputs = [Path(p) for p in inputs]
    for out in outputs:
        for inp in inputs:
            if same_path(out, inp):
                also = "" if Path(out).resolve() == Path(inp).resolve() else f" (as {inp})"
                raise ConfigError(option, f"{out} would overwrite an input of this command{also}; "
                                  "write to another path")


def check_output_folder(option: str, folder: PathLike, inputs: Iterable[PathLike]) -> None:
    """Raise :class:`ConfigError` when ``folder`` is an existing file, or is (or holds) one of ``inputs``.

    A folder the command fills must not be where its inputs live: it would mix
    outputs with the data and could replace an input that has an output's name.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(option, f"{folder} is a file; give a folder (new, or one this command wrote before)")
    root = folder.resolve()
    for inp in inputs:
        p = Path(inp).resolve()
        if p == root or root in p.parents:
            raise ConfigError(option, f"{folder} holds the input {inp}; write to a folder of its own, "
                              "outside the dataset")
