"""medssl.heads: projection MLP, DINO head, SwAV prototypes, conv decoder, MAE decoder."""

from .conv_decoder import ConvDecoder
from .dino_head import DINOHead
from .mae_decoder import MAEDecoder
from .projection import ProjectionHead
from .prototypes import Prototypes

__all__ = ["ConvDecoder", "DINOHead", "MAEDecoder", "ProjectionHead", "Prototypes"]
