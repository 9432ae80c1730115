"""medssl.views: seeded augmentations and view generators for 2D and 3D images."""

from .base import Compose, RandomApply, Transform, sample_image
from .generators import AUGMENT_KEYS, MaskedView, MultiCrop, TwoViews, augment_settings, default_augment
from .intensity import BrightnessContrast, Gamma, GaussianBlur, GaussianNoise, gaussian_blur
from .masking import block_mask
from .spatial import RandomFlip, RandomResizedCrop, Resize

__all__ = [
    "Compose", "RandomApply", "Transform", "sample_image", "MaskedView", "MultiCrop", "TwoViews",
    "AUGMENT_KEYS", "augment_settings", "default_augment", "BrightnessContrast", "Gamma", "GaussianBlur", "GaussianNoise", "gaussian_blur",
    "block_mask", "RandomFlip", "RandomResizedCrop", "Resize",
]
