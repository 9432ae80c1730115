"""``medssl drr``: render X-rays (DRRs) from a CT volume.

    medssl drr ct.nii.gz --out drr/ --views pa,lateral --size 256

Writes ``<stem>_<view>.png`` (windowed, bone bright), ``<stem>_drr.npy``
(raw line integrals of linear attenuation, (V, H, W) float32) and
``<stem>_drr.json`` (volume, affine, energy, mode and one pose per view).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import ConfigError
from .options import check_output_dir, option_errors


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem or "volume"


def run_drr(volume: Path, out: Path, *, views: str = "pa,lateral", size: int = 256, energy_kev: float = 60.0,
            mode: str = "siddon", sdd: float = 1800.0, sod: float = 1600.0, bits: int = 8,
            photons: Optional[float] = None, seed: int = 0) -> dict:
    """Render ``views`` of the CT at ``volume`` (HU) into ``out``; returns the geometry record."""
    from ..drr import hu_to_mu, render, standard_poses, window
    from ..drr.geometry import pose_summary
    from ..drr.physics import noisy_line_integral
    from ..io import read_volume, write_png
    from ..io.atomic import save_npy_atomic, write_text_atomic

    names = [v.strip().lower() for v in views.split(",") if v.strip()]
    if not names:
        raise ConfigError("--views", "give at least one view, e.g. pa,lateral")
    if size < 1:
        raise ConfigError("--size", f"detector size must be at least 1 pixel, got {size}")
    if bits not in (8, 16):
        raise ConfigError("--bits", f"must be 8 or 16, got {bits}")
    if photons is not None and not (np.isfinite(photons) and photons > 0):
        raise ConfigError("--photons", f"must be a positive photon count, got {photons}")
    check_output_dir("--out", out)
    options = option_errors(view="--views", energy_kev="--energy", mode="--mode", photons="--photons",
                            **{"pose.size": "--size", "pose.sod": "--sod", "pose.sdd": "--sdd",
                               "pose.sod/pose.sdd": "--sod/--sdd"})
    with options:  # options the renderer would only reject after reading the volume
        from ..drr.geometry import view_frame
        from ..drr.physics import attenuation_coefficients

        for name in names:
            view_frame(name)
        attenuation_coefficients(energy_kev)
    vol = read_volume(volume)
    with options:
        poses = standard_poses(names, vol.array.shape, vol.affine, size=size, sdd=sdd, sod=sod)
        mu = hu_to_mu(vol.array, energy_kev)
        raw = render(mu, vol.affine, poses, mode=mode)
        shown = raw if photons is None else noisy_line_integral(raw, photons, np.random.default_rng(seed))
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(volume)
    files = []
    for name, image in zip(names, shown):
        png = out / f"{stem}_{name}.png"
        write_png(window(image, bits=bits), png)
        files.append(png.name)
    npy = out / f"{stem}_drr.npy"
    save_npy_atomic(npy, raw.astype(np.float32))
    record = {
        "volume": volume.name, "shape": list(vol.array.shape), "voxel_to_world": np.asarray(vol.affine).tolist(),
        "world": "RAS mm", "quantity": "line integral of linear attenuation (dimensionless), (V, H, W)",
        "energy_kev": energy_kev, "mode": mode, "photons": photons, "seed": seed if photons else None,
        "views": names, "images": files, "array": npy.name,
        "poses": [pose_summary(p, vol.array.shape, vol.affine) for p in poses],
    }
    write_text_atomic(out / f"{stem}_drr.json", json.dumps(record, indent=2))
    return record


def register(app: typer.Typer) -> None:
    @app.command("drr")
    def drr_cmd(
        volume: Path = typer.Argument(..., help="CT volume in HU (NIfTI, NRRD, MHA or a DICOM series folder)"),
        out: Path = typer.Option(..., "--out", help="output folder"),
        views: str = typer.Option("pa,lateral", "--views", help="comma-separated: pa, ap, lateral (lat), rlat"),
        size: int = typer.Option(256, "--size", help="detector size in pixels (square)"),
        energy: float = typer.Option(60.0, "--energy", help="effective photon energy in keV (20-150)"),
        mode: str = typer.Option("siddon", "--mode", help="siddon (exact) | trilinear"),
        sdd: float = typer.Option(1800.0, "--sdd", help="source-to-detector distance, mm"),
        sod: float = typer.Option(1600.0, "--sod", help="source-to-isocentre distance, mm"),
        bits: int = typer.Option(8, "--bits", help="PNG bit depth: 8 or 16"),
        photons: Optional[float] = typer.Option(None, "--photons", help="add Poisson noise: photons per pixel"),
        seed: int = typer.Option(0, "--seed", help="noise seed"),
    ) -> None:
        """Render digitally reconstructed radiographs (PNG + raw .npy + geometry JSON)."""
        rec = run_drr(volume, out, views=views, size=size, energy_kev=energy, mode=mode, sdd=sdd, sod=sod,
                      bits=bits, photons=photons, seed=seed)
        typer.echo(f"wrote {', '.join(rec['images'])}, {rec['array']} to {out}")
