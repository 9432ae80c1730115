"""``medssl list``: what is registered."""

from __future__ import annotations

import typer

from ..registry import BACKBONES, LAYOUTS, METHODS, SOURCES, TASKS


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd() -> None:
        """List registered backbones, methods, data layouts, sources and evaluation tasks."""
        for reg in (BACKBONES, METHODS, LAYOUTS, SOURCES, TASKS):
            items = reg.describe()
            typer.echo(f"{reg.kind}s:")
            if not items:
                typer.echo("  (none)")
            for name, doc in items.items():
                typer.echo(f"  {name:<22} {doc}")
