"""nnU-Net v2 plans files read as data: one configuration's network, patch size, spacing and CT statistics.

A plans file (``nnUNetResEncUNetMPlans.json``, written by
``nnUNetv2_plan_and_preprocess``) holds per configuration (``3d_fullres``,
``2d``, ...) the network class and its keyword arguments, the patch size and
the target spacing, and for the whole dataset the foreground intensity
statistics of each input channel (the fingerprint values nnU-Net's
``CTNormalization`` uses). This module reads them with :mod:`json` only:
nnunetv2 need not be installed, and nothing named in the file is imported.

Axis order: nnU-Net keeps the arrays SimpleITK reads, ``(z, y, x)``, and
then permutes them by ``transpose_forward``; ``patch_size`` and ``spacing``
are given in that permuted order. :attr:`Configuration.spacing_xyz` and
:attr:`Configuration.patch_size_zyx` undo the permutation, giving the
spacing ``medssl preprocess --spacing`` takes (x, y, z mm) and the patch in
the order of the medssl cache's ``(z, y, x)`` arrays (for images stored
axis-aligned; medssl reorients, nnU-Net does not).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..errors import ConfigError, DataError
from .jsonfile import read_json

__all__ = ["Configuration", "read_plans", "read_configuration", "ct_statistics", "RESENC_CLASS"]

#: The network class nnU-Net's residual-encoder planners (``nnUNetPlannerResEncM/L/XL``) write.
RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


@dataclass
class Configuration:
    """One configuration of a plans file."""

    path: Path
    name: str
    plans_name: Optional[str]
    network_class: str
    arch: Dict[str, Any]
    patch_size: List[int]
    spacing: List[float]
    transpose_forward: List[int]
    normalization_schemes: List[str]
    in_channels: Optional[int]
    intensity_properties: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def transpose_backward(self) -> List[int]:
        back = [0] * len(self.transpose_forward)
        for i, axis in enumerate(self.transpose_forward):
            back[axis] = i
        return back

    def _unpermute(self, values: List[Any]) -> List[Any]:
        """Values in nnU-Net's permuted axis order -> SimpleITK's array order ``(z, y, x)``."""
        if len(values) != len(self.transpose_forward):  # a 2d configuration: in-plane axes only
            return list(values)
        return [values[b] for b in self.transpose_backward]

    @property
    def patch_size_zyx(self) -> List[int]:
        return [int(v) for v in self._unpermute(self.patch_size)]

    @property
    def spacing_xyz(self) -> List[float]:
        return [float(v) for v in reversed(self._unpermute(self.spacing))]


def read_plans(path: Union[str, Path]) -> Dict[str, Any]:
    """The plans file as a dict, with the keys every configuration lookup needs checked."""
    path = Path(path)
    plans = read_json(path, hint="expected an nnU-Net plans file (nnUNetPlans.json, nnUNetResEncUNetMPlans.json, ...)")
    if not isinstance(plans.get("configurations"), dict) or not plans["configurations"]:
        raise DataError(path, "not an nnU-Net plans file: no 'configurations'")
    return plans


def _resolve(plans: Mapping[str, Any], name: str, path: Path, seen: tuple = ()) -> Dict[str, Any]:
    """A configuration with ``inherits_from`` applied (the child's keys replace the parent's)."""
    configs = plans["configurations"]
    if name not in configs:
        raise ConfigError("configuration", f"{path} has no configuration '{name}' (it has: {', '.join(configs)})")
    if name in seen:
        raise DataError(path, f"configurations inherit from each other in a cycle: {' -> '.join(seen + (name,))}")
    own = dict(configs[name])
    parent = own.pop("inherits_from", None)
    if parent is None:
        return copy.deepcopy(own)
    out = _resolve(plans, str(parent), path, seen + (name,))
    out.update(copy.deepcopy(own))
    return out


def read_configuration(path: Union[str, Path], configuration: str = "3d_fullres") -> Configuration:
    """One configuration of the plans file ``path``; errors name the file and the missing entry."""
    path = Path(path)
    plans = read_plans(path)
    cfg = _resolve(plans, configuration, path)
    arch = cfg.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch or not isinstance(arch.get("arch_kwargs"), dict):
        raise DataError(path, f"configuration '{configuration}' has no 'architecture' with 'network_class_name' and "
                        "'arch_kwargs' (a plans file of nnU-Net < 2.4 is not supported)")
    for key in ("patch_size", "spacing"):
        if not isinstance(cfg.get(key), list) or not cfg[key]:
            raise DataError(path, f"configuration '{configuration}' has no '{key}'")
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    in_channels = len(props) if isinstance(props, dict) and props else None
    dims = len(cfg["patch_size"])
    transpose = plans.get("transpose_forward") or list(range(3))
    return Configuration(
        path=path, name=configuration, plans_name=plans.get("plans_name"),
        network_class=str(arch["network_class_name"]), arch=dict(arch["arch_kwargs"]),
        patch_size=[int(v) for v in cfg["patch_size"]], spacing=[float(v) for v in cfg["spacing"]][:dims],
        transpose_forward=[int(v) for v in transpose],
        normalization_schemes=[str(s) for s in cfg.get("normalization_schemes") or []],
        in_channels=in_channels, intensity_properties=dict(props) if isinstance(props, dict) else {},
    )


def ct_statistics(path: Union[str, Path], channel: int = 0) -> Dict[str, float]:
    """``{"percentile_00_5", "percentile_99_5", "mean", "std"}`` of input ``channel`` from a plans file or a
    ``dataset_fingerprint.json`` (both hold ``foreground_intensity_properties_per_channel``)."""
    path = Path(path)
    data = read_json(path, hint="expected an nnU-Net plans file or dataset_fingerprint.json")
    props = data.get("foreground_intensity_properties_per_channel")
    if not isinstance(props, dict):
        raise DataError(path, "has no 'foreground_intensity_properties_per_channel' (expected an nnU-Net plans file "
                        "or dataset_fingerprint.json)")
    entry = props.get(str(channel))
    if not isinstance(entry, dict):
        raise DataError(path, f"no intensity statistics for channel {channel} (channels: {', '.join(props)})")
    need = ("percentile_00_5", "percentile_99_5", "mean", "std")
    missing = [k for k in need if not isinstance(entry.get(k), (int, float))]
    if missing:
        raise DataError(path, f"channel {channel} lacks {', '.join(missing)}")
    return {k: float(entry[k]) for k in need}
