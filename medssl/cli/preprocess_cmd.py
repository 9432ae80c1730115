"""``medssl preprocess MANIFEST --out CACHE``: fingerprint a dataset and fill the cache."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .options import option_errors


def parse_spacing(text: Optional[str]) -> Optional[List[float]]:
    """``"1.5,1.5,2"`` -> [1.5, 1.5, 2.0] (x, y, z mm); one number means isotropic."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError("--spacing", f"expected numbers like 1.5,1.5,2 (x,y,z mm), got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError("--spacing", f"expected three positive numbers (x,y,z mm), got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    @app.command("preprocess")
    def preprocess_cmd(
        manifest: Path = typer.Argument(..., help="manifest.jsonl describing the dataset"),
        out: Path = typer.Option(..., "--out", help="cache folder to create or complete"),
        spacing: Optional[str] = typer.Option(None, "--spacing", help="target voxel size x,y,z in mm "
                                              "(default: the dataset's median spacing)"),
        ct_window: str = typer.Option("-1024,3071", "--ct-window", help="CT HU window mapped to [0, 1]"),
        workers: int = typer.Option(1, "--workers", help="parallel processes"),
        shard: str = typer.Option("0/1", "--shard", help="i/N: process every N-th case starting at i"),
        skip_bad: bool = typer.Option(False, "--skip-bad", help="leave out bad cases (listed in skipped.json) "
                                      "instead of stopping at the first"),
        bspline: bool = typer.Option(False, "--bspline", help="cubic B-spline instead of linear image resampling"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
        max_voxels: Optional[str] = typer.Option(
            None, "--max-voxels", help="largest image (voxels, read from its header or the resampling plan) "
            "to allocate; default 2^29 or MEDSSL_MAX_VOXELS"),
    ) -> None:
        """Reorient, crop, resample and normalise every case of MANIFEST into the cache CACHE."""
        from ..preprocess import preprocess_manifest
        from ..preprocess.pipeline import parse_shard

        try:
            window = [float(v) for v in ct_window.split(",")]
        except ValueError:
            raise ConfigError("--ct-window", f"expected two numbers like -1024,3071 (HU), got {ct_window!r}") from None
        if workers < 1:
            raise ConfigError("--workers", f"must be >= 1, got {workers}")
        if max_voxels is not None:
            from ..io.limits import set_max_voxels

            set_max_voxels(max_voxels)  # through the environment: worker processes see it too
        options = option_errors(shard="--shard", ct_window="--ct-window", workers="--workers", spacing="--spacing")
        with options:
            shard_pair = parse_shard(shard)
            report = preprocess_manifest(
                manifest, out, spacing=parse_spacing(spacing), ct_window=window, workers=workers,
                shard=shard_pair, skip_bad=skip_bad, progress=not quiet, image_order=3 if bspline else 1)
        typer.echo(report.summary())
