"""``medssl pretrain``: self-supervised pretraining from a YAML preset plus ``key=value`` overrides.

    medssl pretrain --config configs/simclr_tiny.yaml data.manifest=DIR/manifest.jsonl run_dir=RUN trainer.max_steps=100

The cache of the manifest (``data.cache``, default ``<manifest dir>/cache``)
is built first when it does not exist. A run folder holding
``checkpoints/last.pt`` is resumed unless ``--no-resume`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("pretrain", context_settings={"allow_extra_args": False})
    def pretrain_cmd(
        overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. trainer.max_steps=100 optim.lr=3e-4"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML preset (configs/*.yaml)"),
        resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="resume from RUN/checkpoints/last.pt (default: when it exists)"),
        print_config: bool = typer.Option(False, "--print-config", help="print the resolved config and exit"),
    ) -> None:
        """Pretrain an encoder; writes RUN/checkpoints/final.safetensors (+ .json), logs and summary.json."""
        from ..config import check_components, config_to_dict, load_config

        cfg = load_config(config, overrides or [])
        check_components(cfg)
        if print_config:
            import yaml

            typer.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            return
        if cfg.data.manifest is None and cfg.data.cache is None:
            from ..train.build import needs_cache

            if needs_cache(cfg):
                raise ConfigError("data.manifest", "is required (add data.manifest=DIR/manifest.jsonl)")
        from .options import check_accelerator, check_output_dir

        check_accelerator(cfg.trainer.accelerator, cfg.trainer.devices)
        check_output_dir("run_dir", cfg.run_dir)
        if cfg.data.cache is not None:
            check_output_dir("data.cache", cfg.data.cache)
        from ..train.trainer import fit

        summary = fit(cfg, resume=resume)
        typer.echo(json.dumps(summary))
