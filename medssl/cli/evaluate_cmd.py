"""``medssl evaluate``: score a checkpoint (and random initialisation) on evaluation tasks.

Writes ``results.csv``, ``results_per_seed.csv``, ``results.md`` and
``plot_<task>.png`` to ``--out``; see docs/evaluation.md.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .options import check_device, check_output_dir


def parse_numbers(text: str, key: str, cast=float) -> List:
    """``"0,1,2"`` -> [0, 1, 2]; a bad value is a :class:`ConfigError` naming ``key``."""
    try:
        vals = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(key, f"expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ConfigError(key, "expected at least one value")
    return vals


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: List[str] = typer.Option(..., "--checkpoint", help="release checkpoint (.safetensors) or random:<backbone>; repeatable"),
        task: List[str] = typer.Option(..., "--task", help="segmentation | classification | regression | survival | label_efficiency | a method task (medssl list), optionally with its target after a colon (regression:lung_function); repeatable"),
        data: Path = typer.Option(..., "--data", help="manifest.jsonl of the evaluation cohort"),
        out: Path = typer.Option(..., "--out", help="folder for results.csv, results.md and plots"),
        cache: Optional[Path] = typer.Option(None, "--cache", help="preprocessed cache of the manifest (default: preprocess into OUT/cache)"),
        label_fraction: float = typer.Option(0.1, "--label-fraction", help="share of the train split's labels used"),
        seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds (labelled subset and head init)"),
        target: Optional[str] = typer.Option(None, "--target", help="manifest meta key to predict (default per task: severity, emphysema_pct, survival_time)"),
        sweep_task: str = typer.Option("classification", "--sweep-task", help="task the label-efficiency sweep runs"),
        fractions: str = typer.Option("0.05,0.1,0.25,0.5,1.0", "--fractions", help="label fractions of the sweep"),
        seg_steps: Optional[int] = typer.Option(None, "--seg-steps", help="segmentation fine-tuning steps (default: the harness's calibrated 800)"),
        cls_steps: Optional[int] = typer.Option(None, "--cls-steps", help="classification fine-tuning steps (default: 100)"),
        no_finetune: bool = typer.Option(False, "--no-finetune", help="classification: frozen probes only"),
        patch_size: Optional[str] = typer.Option(None, "--patch-size", help="override the checkpoint's patch size, e.g. 32,32,32"),
        feature_mode: str = typer.Option("resize", "--feature-mode", help="frozen features: resize | crop | sliding | body | lungs (sliding windows inside the body / lungs)"),
        split_rule: str = typer.Option("hash", "--split-rule", help="hash | sorted | manifest"),
        no_baseline: bool = typer.Option(False, "--no-baseline", help="leave out the random-initialisation row"),
        device: str = typer.Option("cpu", "--device", help="torch device"),
        spatial_dims: Optional[int] = typer.Option(None, "--spatial-dims", help="2: X-rays, 3: volumes (default: the checkpoint's; a two-path encoder can take either)"),
    ) -> None:
        """Evaluate CHECKPOINT on TASK over seeds, with a random-initialisation baseline row."""
        from ..eval.compare import evaluate_models, split_task
        from ..eval.data import load_eval_data
        from ..eval.features import FEATURE_MODES
        from ..eval.models import resolve
        from ..splits import SPLIT_RULES
        from ..eval.tasks import EvalSettings
        from ..registry import TASKS

        for t in task:
            name, _ = split_task(t)
            if name not in TASKS:
                raise ConfigError("--task", f"unknown task '{name}' (known: {', '.join(TASKS.names())})")
        if not 0 < label_fraction <= 1:
            raise ConfigError("--label-fraction", f"must lie in (0, 1], got {label_fraction}")
        fr = parse_numbers(fractions, "--fractions")
        if any(not 0 < f <= 1 for f in fr):
            raise ConfigError("--fractions", f"each fraction must lie in (0, 1], got {fractions}")
        if feature_mode not in FEATURE_MODES:
            raise ConfigError("--feature-mode", f"expected one of {', '.join(FEATURE_MODES)}, got {feature_mode!r}")
        if split_rule not in SPLIT_RULES:
            raise ConfigError("--split-rule", f"expected one of {', '.join(SPLIT_RULES)}, got {split_rule!r}")
        for flag, val in (("--seg-steps", seg_steps), ("--cls-steps", cls_steps)):
            if val is not None and val < 0:
                raise ConfigError(flag, "must be >= 0")
        ps = parse_numbers(patch_size, "--patch-size", int) if patch_size else None
        if ps is not None and any(v < 1 for v in ps):
            raise ConfigError("--patch-size", f"sizes must be >= 1, got {patch_size}")
        if any(v < 0 for v in parse_numbers(seeds, "--seeds", int)):
            raise ConfigError("--seeds", f"seeds must be >= 0, got {seeds}")
        check_device("--device", device)
        check_output_dir("--out", out)
        if cache is not None:
            check_output_dir("--cache", cache)
        s = EvalSettings(
            seeds=tuple(parse_numbers(seeds, "--seeds", int)), label_fraction=label_fraction, fractions=tuple(fr),
            target=target, sweep_task=sweep_task, split_rule=split_rule, feature_mode=feature_mode,
            finetune_classification=not no_finetune, device=device,
        )
        if seg_steps is not None:
            s.seg.steps = seg_steps
        if cls_steps is not None:
            s.cls.steps = cls_steps
        models = [resolve(c, patch_size=ps) for c in checkpoint]
        names = [m.name for m in models]
        for j, m in enumerate(models):  # two checkpoints of one method: keep rows apart
            if names.count(m.name) > 1:
                m.name = f"{m.name}-{j}"
        if spatial_dims not in (None, 2, 3):
            raise ConfigError("--spatial-dims", f"expected 2 or 3, got {spatial_dims}")
        ds = load_eval_data(data, cache=cache, out=out, spatial_dims=spatial_dims or models[0].spatial_dims,
                            strict=spatial_dims is not None)
        cmd = "medssl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if len(sys.argv) > 1 else None
        result = evaluate_models(models, task, ds, s, out=out, command=cmd, add_random_baseline=not no_baseline)
        typer.echo(result["markdown"])
        typer.echo(f"wrote {', '.join(str(f) for f in result['files'])}")
