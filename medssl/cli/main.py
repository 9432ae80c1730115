"""The ``medssl`` console script: one program, one subcommand per job.

Each subcommand lives in its own module under ``medssl.cli`` with a
``register(app)`` function; this file lists them explicitly.
"""

from __future__ import annotations

import errno
import importlib
import sys
from typing import List, Optional

import typer

from ..errors import MedsslError
from ..runtime import tune_cpu_allocator

COMMAND_MODULES = [
    "medssl.cli.list_cmd",
    "medssl.cli.synth_cmd",
    "medssl.cli.manifest_cmd",
    "medssl.cli.preprocess_cmd",
    "medssl.cli.drr_cmd",
    "medssl.cli.pretrain_cmd",
    "medssl.cli.evaluate_cmd",
    "medssl.cli.export_cmd",
    "medssl.cli.import_weights_cmd",
    "medssl.cli.demo_cmd",
]


#: Errors of the machine rather than of medssl: a full disk, a quota, no permission, a read-only or
#: too-long path. They exit with status 2 and one line; any other OSError keeps its traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` of an environment error; a full disk says that earlier outputs are intact."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = f"{where}{exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += " (every file is written to a temporary name and renamed when complete, so earlier outputs " \
                "are as they were; free some space and run again)"
    return text


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="medssl",
        help="Self-supervised pretraining for 3D medical volumes and 2D images, and its evaluation.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        """Self-supervised pretraining for medical images, and its evaluation."""

    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app)
    return app


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; user errors print one line and exit with status 2."""
    tune_cpu_allocator()
    app = build_app()
    try:
        app(args=argv, standalone_mode=False)
    except MedsslError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        typer.echo(f"error: {describe_os_error(exc)}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:  # typer/click exits (--help, usage errors)
        return int(exc.code or 0)
    except Exception as exc:
        # Usage errors of the (vendored) click layer: print them as click would.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
