"""medssl: self-supervised and vision-language pretraining for medical images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
