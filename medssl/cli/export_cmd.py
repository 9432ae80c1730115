"""``medssl export CKPT --to monai|state-dict|nnunet --out FILE``: the pretrained weights for another framework."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

TARGETS = ("monai", "state-dict", "nnunet")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        checkpoint: Path = typer.Argument(..., help="release checkpoint (.safetensors with its .json sidecar)"),
        to: str = typer.Option("state-dict", "--to", help="monai: keys of the matching MONAI network; state-dict: "
                               "the backbone's keys; nnunet: the whole network nnU-Net plans, for "
                               "nnUNetv2_train -pretrained_weights"),
        out: Path = typer.Option(..., "--out", "-o", help="output file (.safetensors, or .pt read with "
                                 "torch.load(weights_only=True); --to nnunet: a .pth)"),
        plans: Optional[Path] = typer.Option(None, "--plans", help="--to nnunet: the nnU-Net plans file "
                                             "(e.g. nnUNetResEncUNetMPlans.json) of the dataset to fine-tune on"),
        configuration: str = typer.Option("3d_fullres", "--configuration", "-c",
                                          help="--to nnunet: the plans' configuration"),
    ) -> None:
        """Export the pretrained weights of a release checkpoint."""
        from ..errors import ConfigError

        if to not in TARGETS:
            raise ConfigError("--to", f"expected one of {', '.join(TARGETS)}, got {to!r}")
        if to == "nnunet":
            from ..weights.nnunet_export import export_nnunet

            if plans is None:
                raise ConfigError("--plans", "is required with --to nnunet (the plans file nnUNetv2_plan_and_preprocess "
                                  "wrote, e.g. nnUNet_preprocessed/DatasetXXX/nnUNetResEncUNetMPlans.json)")
            facts = export_nnunet(checkpoint, plans=plans, configuration=configuration, out=out)
            parts = "encoder and decoder" if facts["pretrained"]["decoder"] else "encoder (decoder freshly initialised)"
            for note in facts["notes"]:
                typer.echo(f"note: {note}", err=True)
            typer.echo(f"wrote {out} and {out.name}.json: {facts['keys']} tensors, pretrained {parts}")
            return
        if plans is not None:
            raise ConfigError("--plans", "is read with --to nnunet only")
        from ..checkpoint import export

        path = export(checkpoint, to=to, out=out)
        typer.echo(f"wrote {path} and {path.name}.json")
