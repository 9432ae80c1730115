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
        from ..synth import generate_cohort

        n_unpaired = (n if unpaired < 0 else unpaired) if xrays else 0
        manifest = generate_cohort(out, n=n, seed=seed, preset=preset, progress=progress, workers=workers,
                                   xrays=xrays, xray_size=xray_size or None, n_unpaired=n_unpaired)
        extra = f", {2 * n} paired X-rays and {n_unpaired} unpaired" if xrays else ""
        typer.echo(f"wrote {n} patients{extra}; manifest: {manifest}")
