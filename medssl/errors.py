"""Errors that medssl raises for bad input.

Every error a user can cause with a file or an argument is a subclass of
:class:`MedsslError`. The command line catches these, prints the message
(which names the file or argument and the problem) and exits with status 2,
without a traceback.

Every class survives a pickle round trip (the preprocessing workers send
their errors to the parent process): :class:`MedsslError` remembers the
arguments it was constructed with and rebuilds itself from them, so a
subclass may take any constructor signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple


def _rebuild(cls: type, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> "MedsslError":
    return cls(*args, **kwargs)


class MedsslError(Exception):
    """Base class of errors caused by user input (files, arguments, configs)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "MedsslError":
        self = super().__new__(cls, *args)
        self._init_args = (args, kwargs)
        return self

    def __reduce__(self):
        # Exception's default reduces to cls(*self.args), and self.args holds the formatted
        # message, which a subclass with its own signature cannot be rebuilt from.
        args, kwargs = getattr(self, "_init_args", (self.args, {}))
        state = {k: v for k, v in self.__dict__.items() if k != "_init_args"}
        return _rebuild, (type(self), args, kwargs), state or None


class DataError(MedsslError, ValueError):
    """A file could not be used: corrupt, wrong shape, NaN voxels, missing label...

    The message always starts with the offending path.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ConfigError(MedsslError, ValueError):
    """A configuration key is unknown, has the wrong type or an invalid value.

    The message names the key (a command-line option such as ``--out`` is named as an option).
    """

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        what = "option" if str(key).startswith("-") else "config key"
        super().__init__(f"{what} '{key}': {problem}")


class CheckpointError(MedsslError, ValueError):
    """A checkpoint is unreadable or does not fit what it is loaded into."""
