"""Data sources over the preprocessing cache (registered in ``medssl.registry.SOURCES``)."""

from .image_source import ImageSource
from .loader import EpochSampler, batch_to, make_loader
from .patch_source import PatchSource
from .slice_source import SliceSource

__all__ = ["ImageSource", "PatchSource", "SliceSource", "EpochSampler", "batch_to", "make_loader"]
