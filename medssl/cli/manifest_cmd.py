"""``medssl manifest``: build a manifest from a dataset layout, or check one.

    medssl manifest --layout msd Task09_Spleen --out Task09_Spleen/manifest.jsonl
    medssl manifest --layout reports_csv ct_rate/ --csv reports.csv --report-column Findings_EN
    medssl manifest --check manifest.jsonl
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import typer

from ..errors import ConfigError
from .options import option_errors


def _parse_options(items: List[str]) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("manifest.option", f"expected key=value, got '{item}'")
        key, value = item.split("=", 1)
        low = value.lower()
        out[key.strip()] = True if low == "true" else False if low == "false" else value
    return out


def summarize(cases) -> List[str]:
    """Human-readable summary lines of a list of cases."""
    mods = Counter(c.modality for c in cases)
    splits = Counter(c.split or "-" for c in cases)
    return [
        f"cases: {len(cases)}",
        "modality: " + ", ".join(f"{k} {v}" for k, v in sorted(mods.items())),
        "split: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())),
        f"with label: {sum(c.label is not None for c in cases)}",
        f"with report: {sum(c.report is not None or c.report_text is not None for c in cases)}",
        f"with pair: {sum(c.pair is not None for c in cases)}",
    ]


def register(app: typer.Typer) -> None:
    @app.command("manifest")
    def manifest_cmd(
        src: Optional[Path] = typer.Argument(None, help="dataset folder to build a manifest from"),
        layout: Optional[str] = typer.Option(None, "--layout", help="msd | nnunet | folder | reports_csv"),
        out: Optional[Path] = typer.Option(None, "--out", help="manifest to write (default SRC/manifest.jsonl)"),
        check: Optional[Path] = typer.Option(None, "--check", help="validate this manifest and print a summary"),
        modality: Optional[str] = typer.Option(None, "--modality", help="ct | mr | xray (else read or guessed)"),
        split: Optional[str] = typer.Option(None, "--split", help="split for every case (folder, reports_csv)"),
        labels_dir: Optional[str] = typer.Option(None, "--labels-dir", help="folder layout: label maps"),
        csv: Optional[str] = typer.Option(None, "--csv", help="reports_csv layout: the report table"),
        key_column: Optional[str] = typer.Option(None, "--key-column", help="reports_csv: file-name column"),
        report_column: Optional[List[str]] = typer.Option(None, "--report-column",
                                                          help="reports_csv: text column (repeatable)"),
        option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="other layout option key=value"),
    ) -> None:
        """Build a manifest (JSONL) from a dataset layout, or validate one with --check."""
        from ..io.manifest import load_manifest, write_manifest
        from ..registry import LAYOUTS

        if check is not None:
            if src is not None or layout is not None:
                raise ConfigError("manifest.check", "--check takes no SRC or --layout")
            cases = load_manifest(check)
            typer.echo(f"{check}: ok")
            for line in summarize(cases):
                typer.echo(f"  {line}")
            return
        if src is None or layout is None:
            raise ConfigError("manifest", "give --layout LAYOUT SRC to build, or --check MANIFEST")
        kwargs: Dict[str, object] = _parse_options(option or [])
        given = {"modality": modality, "split": split, "labels_dir": labels_dir, "csv": csv,
                 "key_column": key_column, "report_columns": report_column or None}
        kwargs.update({k: v for k, v in given.items() if v is not None})
        target = out if out is not None else Path(src) / "manifest.jsonl"
        if target.is_dir():
            raise ConfigError("--out", f"{target} is a folder; give the manifest file to write (e.g. "
                              f"{target / 'manifest.jsonl'})")
        names = {k: f"--{k.replace('_', '-')}" for k in given if k != "report_columns"}
        names.update({"report_columns": "--report-column", "on_missing": "--option on_missing"})
        with warnings.catch_warnings(record=True) as caught, option_errors(**names):
            warnings.simplefilter("always")
            cases = LAYOUTS.build(layout, src=src, **kwargs)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        write_manifest(cases, target)
        cases = load_manifest(target)
        typer.echo(f"wrote {target}")
        for line in summarize(cases):
            typer.echo(f"  {line}")
