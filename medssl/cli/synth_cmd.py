"""``medssl synth``: write a synthetic chest CT cohort (the embedded default data)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        out: Path = typer.Option(..., "--out", help="Folder to write the cohort into (new, empty, or an earlier cohort)."),
        n: int = typer.Option(8, "--n", help="Number of patients."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical volumes."),
        preset: str = typer.Option("default", "--preset", help="Size preset: tiny (tests) or default (demo)."),
        workers: int = typer.Option(1, "--workers", help="Parallel processes."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        xrays: bool = typer.Option(True, "--xrays/--no-xrays", help="Render a PA and a lateral X-ray (DRR) per patient."),
        xray_size: int = typer.Option(0, "--xray-size", help="X-ray size in pixels (0: the preset's in-plane size)."),
        unpaired: int = typer.Option(-1, "--unpaired", help="Extra X-rays of further patients (-1: as many as --n)."),
    ) -> None:
        """Synthesise chest CT patients: volumes, organ and lesion labels, reports, patients.csv, manifest."""
        from ..errors import ConfigError
        from ..synth import generate_cohort
        from .options import check_output_dir

        if n < 1:
            raise ConfigError("--n", f"number of patients must be >= 1, got {n}")
        if xray_size < 0:
            raise ConfigError("--xray-size", f"must be >= 0 pixels (0: the preset's size), got {xray_size}")
        check_output_dir("--out", out)
        n_unpaired = (n if unpaired < 0 else unpaired) if xrays else 0
        manifest = generate_cohort(out, n=n, seed=seed, preset=preset, progress=progress, workers=workers,
                                   xrays=xrays, xray_size=xray_size or None, n_unpaired=n_unpaired)
        extra = f", {2 * n} paired X-rays and {n_unpaired} unpaired" if xrays else ""
        typer.echo(f"wrote {n} patients{extra}; manifest: {manifest}")
