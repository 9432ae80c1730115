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
    ) -> None:
        """Synthesise chest CT patients: volumes, organ and lesion labels, reports, patients.csv, manifest."""
        from ..synth import generate_cohort

        manifest = generate_cohort(out, n=n, seed=seed, preset=preset, progress=progress, workers=workers)
        typer.echo(f"wrote {n} patients; manifest: {manifest}")
