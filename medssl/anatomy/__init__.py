"""Anatomy: lung masks, atlas registration and anatomical patch grids (DrasCLR)."""

from .lung_mask import load_or_compute_lung_mask, lung_mask
from .patch_grid import PatchGrid, atlas_patch_grid, extract_block, map_to_subject
from .registration import RegistrationResult, register_masks

__all__ = [
    "lung_mask",
    "load_or_compute_lung_mask",
    "PatchGrid",
    "atlas_patch_grid",
    "extract_block",
    "map_to_subject",
    "RegistrationResult",
    "register_masks",
]
