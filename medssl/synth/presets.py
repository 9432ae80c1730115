"""Size presets of the synthetic cohort.

A preset fixes the voxel matrix and the ranges from which each patient's
anatomy and scanner settings are drawn. ``tiny`` is for tests (a few seconds
for a handful of patients); ``default`` is for the demo and the benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple, Union

from ..errors import ConfigError

Range = Tuple[float, float]


@dataclass(frozen=True)
class Preset:
    """Generator settings.

    shape: voxel matrix (X, Y, Z); in-plane spacing follows from the
        patient's body width times ``fov_margin`` (the reconstruction field of
        view is fitted to the patient, as on a clinical scanner).
    anatomy_scale: multiplies adult body dimensions in mm (1.0: adult).
    body_half_width_mm: half the left-right body width at scale 1.
    slice_spacing_mm: distance between slices; the slice thickness is the
        spacing times a factor drawn from ``thickness_ratio``.
    noise_hu: standard deviation of the scanner noise in HU.
    blur_vox: in-plane Gaussian blur (reconstruction kernel) in voxels.
    nodule_mm: range of nodule diameters in mm.
    """

    name: str
    shape: Tuple[int, int, int]
    anatomy_scale: float
    body_half_width_mm: Range = (130.0, 160.0)
    fov_margin: Range = (1.06, 1.22)
    slice_spacing_mm: Range = (2.0, 3.0)
    thickness_ratio: Range = (1.0, 1.5)
    noise_hu: Range = (8.0, 30.0)
    blur_vox: Range = (0.3, 0.7)
    nodule_mm: Range = (4.0, 24.0)
    max_nodules: int = 4
    airway_generations: int = 6
    vessel_generations: int = 7

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


PRESETS: Dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        shape=(48, 48, 40),
        anatomy_scale=0.55,
        slice_spacing_mm=(2.8, 3.6),
        noise_hu=(8.0, 25.0),
        nodule_mm=(9.0, 18.0),
        max_nodules=3,
        airway_generations=4,
        vessel_generations=5,
    ),
    "default": Preset(name="default", shape=(128, 128, 96), anatomy_scale=1.0),
}


def get_preset(preset: Union[str, Preset]) -> Preset:
    """Return the :class:`Preset` named ``preset`` (or ``preset`` itself)."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return PRESETS[preset]
