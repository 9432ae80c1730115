"""``medssl import-weights``: a released checkpoint -> a medssl release checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("import-weights")
    def import_weights(
        src: Path = typer.Argument(..., help="Released checkpoint (.pth / .pt)."),
        arch: str = typer.Option(..., "--arch", help="Architecture: mit_tiny, mit_small, mit_plus (UniMiSS) or cond_cnn3d (DrasCLR)."),
        out: Path = typer.Option(..., "--out", help="Output checkpoint (.safetensors; a .json sidecar is written next to it)."),
        trust: bool = typer.Option(
            False, "--trust", help="Allow full unpickling of SRC (runs code from the file; only for files you trust)."
        ),
        select: str = typer.Option(
            "auto", "--select", help="Which weights in a training checkpoint: auto (teacher first), teacher, student, ..."
        ),
    ) -> None:
        """Convert the authors' released UniMiSS / UniMiSS+ weights into a medssl checkpoint."""
        from ..checkpoint import sidecar_path
        from ..weights.importer import import_released

        path = import_released(src, arch, out, trust=trust, select=select)
        typer.echo(f"wrote {path} and {sidecar_path(path).name}")
