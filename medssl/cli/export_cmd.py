"""``medssl export CKPT --to monai|state-dict --out FILE``: the encoder as a plain state dict."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        checkpoint: Path = typer.Argument(..., help="release checkpoint (.safetensors with its .json sidecar)"),
        to: str = typer.Option("state-dict", "--to", help="monai: keys of the matching MONAI network; state-dict: the backbone's keys"),
        out: Path = typer.Option(..., "--out", "-o", help="output file (.safetensors, or .pt read with torch.load(weights_only=True))"),
    ) -> None:
        """Export the pretrained encoder of a release checkpoint."""
        from ..checkpoint import export

        if to not in ("monai", "state-dict"):
            from ..errors import ConfigError

            raise ConfigError("--to", f"expected 'monai' or 'state-dict', got {to!r}")
        path = export(checkpoint, to=to, out=out)
        typer.echo(f"wrote {path} and {path.name}.json")
