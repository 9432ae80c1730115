"""medssl.heads: projection MLP, DINO head, SwAV prototypes, conv decoder."""

from .conv_decoder import ConvDecoder
from .dino_head import DINOHead
from .projection import ProjectionHead
from .prototypes import Prototypes

__all__ = ["ConvDecoder", "DINOHead", "ProjectionHead", "Prototypes"]
