"""Losses for self-supervised pretraining, one per file: pure functions plus thin modules."""

from .dino_loss import DINOLoss, dino_loss
from .infonce_loss import InfoNCELoss, infonce_loss
from .mse_masked import MaskedMSELoss, mse_masked
from .ntxent_loss import NTXentLoss, ntxent_loss
from .swav_loss import SwAVLoss, sinkhorn, swav_loss

__all__ = [
    "DINOLoss", "dino_loss", "InfoNCELoss", "infonce_loss", "MaskedMSELoss", "mse_masked",
    "NTXentLoss", "ntxent_loss", "SwAVLoss", "sinkhorn", "swav_loss",
]
