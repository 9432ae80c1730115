"""``medssl demo``: the whole flow on the embedded synthetic cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo_run"), "--out", help="Folder for the cohort, runs and results."),
        n: int = typer.Option(32, "--n", help="Patients in the synthetic cohort."),
        seed: int = typer.Option(0, "--seed", help="Cohort and pretraining seed."),
        preset: str = typer.Option("default", "--preset", help="Cohort size preset: tiny or default."),
        budget_s: float = typer.Option(30.0, "--budget-s", help="Pretraining wall-clock budget per method (s)."),
        methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of the demo's methods."),
    ) -> None:
        """Synthesise a cohort, pretrain each method briefly, evaluate against random init, print the table."""
        from ..demo import STAGES, DemoSettings, run_demo
        from ..errors import ConfigError

        chosen = None
        if methods:
            chosen = [m.strip() for m in methods.split(",") if m.strip()]
            known = {st.name for st in STAGES}
            unknown = [m for m in chosen if m not in known]
            if unknown:
                raise ConfigError("methods", f"unknown demo method(s) {unknown} (known: {sorted(known)})")
        result = run_demo(DemoSettings(out=out, n=n, seed=seed, preset=preset, budget_s=budget_s, methods=chosen),
                          log=typer.echo)
        typer.echo("")
        typer.echo(result["table"])
        typer.echo(f"written to {out / 'results.md'}")
        if result["failures"]:
            raise typer.Exit(1)
