"""T3D: text-informed pretraining on high-resolution 3D volumes.

Liu, Ouyang, Chen, Quilodran-Casas, Ma, Fu, Guo, Shah, Bai, Arcucci,
"T3D: Towards 3D Medical Image Understanding through Vision-Language
Pre-training", arXiv:2312.01529 (v1, 2023). There is no official code; the
choices below are ours (docs/methods/t3d.md explains each):

- Reports: the train split's only (source option ``report_split``, default
  ``train``): the evaluation's retrieval and zero-shot tasks score the test
  split's (volume, report) pairs, so they must stay unseen.
- Input: ``K`` random crops per volume at the cache's spacing (source
  ``reports``), never a downsampled whole volume; the trainer's
  ``grad_checkpointing`` and ``bf16-mixed`` make 96^3-128^3 crops fit, and the
  decoder's upsampling stages are checkpointed with the encoder.
- One encoder pass per crop, on the corrupted crop (corruption doubles as the
  contrastive augmentation); the pooled feature feeds the contrastive heads,
  the deepest map feeds the restoration decoder.
- (i) Text-informed contrastive: crop features -> volume feature (mean or
  attention pooling) -> joint space, aligned with the frozen report
  embedding through a trainable linear map (``align_loss``: symmetric
  ``infonce`` or ``siglip``); crop-to-crop InfoNCE across volumes with soft
  positives from report-embedding similarity (softmax at ``report_temperature``).
- (ii) Text-informed restoration: a decoder cross-attending to the sentence
  embeddings restores the crops; L1 (or MSE) on corrupted voxels only.
- Ablations: ``text_restoration=False`` (plain restoration),
  ``restoration_weight=0``, ``align_weight=0`` / ``crop_weight=0``
  (no contrastive). ``t3d_vision`` (below) is the
  vision-only baseline.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import probe_stride
from ..errors import ConfigError
from ..heads.attention_pool import AttentionPool
from ..heads.projection import ProjectionHead
from ..heads.text_conditioned_decoder import TextConditionedDecoder
from ..losses.restoration_loss import masked_restoration_loss
from ..losses.siglip_loss import SigLIPLoss
from ..losses.soft_infonce_loss import crop_soft_infonce, report_targets, soft_infonce_loss
from ..registry import METHODS
from ..views.t3d_views import T3DViews
from .base import Method, ViewGenerator


@METHODS.register("t3d")
class T3D(Method):
    """T3D on a 3D backbone: text-informed contrastive learning + text-informed restoration."""

    use_text: bool = True

    def __init__(
        self,
        backbone: nn.Module,
        text_dim: int = 384,
        joint_dim: int = 256,
        proj_hidden_dim: int = 1024,
        aggregate: str = "attention",
        align_loss: str = "siglip",
        align_weight: float = 1.0,
        align_temperature: float = 0.07,
        crop_weight: float = 0.5,
        crop_temperature: float = 0.1,
        report_temperature: float = 0.05,
        restoration_weight: float = 1.0,
        restoration_loss: str = "l1",
        text_restoration: bool = True,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        decoder_channels: Sequence[int] = (64, 32, 16, 16, 8),
        feature_stride: Optional[int] = None,
        cell: int = 8,
        corrupt_ratio: float = 0.5,
        corruptions: Sequence[str] = ("mask", "noise", "blur"),
    ) -> None:
        super().__init__()
        if getattr(backbone, "spatial_dims", 3) != 3:
            raise ConfigError("backbone.spatial_dims", "T3D pretrains 3D encoders on sub-volume crops; use spatial_dims=3")
        for key, val, allowed in (("aggregate", aggregate, ("mean", "attention")), ("align_loss", align_loss, ("infonce", "siglip")),
                                  ("restoration_loss", restoration_loss, ("l1", "mse"))):
            if val not in allowed:
                raise ConfigError(f"method.t3d.{key}", f"expected one of {', '.join(allowed)}, got {val!r}")
        weights = {"align_weight": align_weight, "crop_weight": crop_weight, "restoration_weight": restoration_weight}
        for key, w in weights.items():
            if w < 0:
                raise ConfigError(f"method.t3d.{key}", f"must be >= 0, got {w}")
        if not self.use_text:
            align_weight, text_restoration = 0.0, False
        if align_weight + crop_weight + restoration_weight <= 0:
            raise ConfigError("method.t3d", "every loss weight is 0: nothing to train")
        for key, t in (("align_temperature", align_temperature), ("crop_temperature", crop_temperature),
                       ("report_temperature", report_temperature)):
            if not t > 0:
                raise ConfigError(f"method.t3d.{key}", f"must be > 0, got {t}")
        self.encoder = backbone
        e = int(backbone.embed_dim)
        self.text_dim = int(text_dim)
        self.align_weight, self.crop_weight, self.restoration_weight = float(align_weight), float(crop_weight), float(restoration_weight)
        self.align_temperature, self.crop_temperature = float(align_temperature), float(crop_temperature)
        self.report_temperature, self.align_loss, self.restoration_loss = float(report_temperature), align_loss, restoration_loss
        self.pool = AttentionPool(e) if aggregate == "attention" else None
        self.crop_proj = ProjectionHead(e, proj_hidden_dim, joint_dim)
        self.volume_proj = ProjectionHead(e, proj_hidden_dim, joint_dim)
        self.text_proj = nn.Linear(self.text_dim, joint_dim)
        self.siglip = SigLIPLoss() if align_loss == "siglip" else None
        self.decoder: Optional[TextConditionedDecoder] = None
        if self.restoration_weight > 0:
            stride = feature_stride if feature_stride is not None else probe_stride(backbone)
            self.decoder = TextConditionedDecoder(
                int(backbone.feature_channels[-1]), self.text_dim if text_restoration else None, out_channels=backbone.in_channels,
                stride=stride, dim=decoder_dim, depth=decoder_depth, heads=decoder_heads, channels=decoder_channels)
        self.views = T3DViews(cell=cell, ratio=corrupt_ratio, kinds=tuple(corruptions))
        # the heads of a term that is off never get a gradient: not trainable, so that DDP (which
        # reduces every trainable parameter) and the optimiser leave them out
        idle = [self.pool, self.volume_proj, self.text_proj, self.siglip] if self.align_weight <= 0 else []
        idle += [self.crop_proj] if self.crop_weight <= 0 else []
        for module in idle:
            if module is not None:
                module.requires_grad_(False)

    # -- pieces ------------------------------------------------------------------------------
    def aggregate(self, h: torch.Tensor) -> torch.Tensor:
        """Crop features ``[B, K, E]`` -> volume feature ``[B, E]``."""
        return h.mean(1) if self.pool is None else self.pool(h)

    def volume_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """Crop features ``[B, K, E]`` -> L2-normalised volume embedding ``[B, joint_dim]`` in the text space."""
        return F.normalize(self.volume_proj(self.aggregate(h)).float(), dim=-1)

    def text_embedding(self, report_emb: torch.Tensor) -> torch.Tensor:
        """Frozen report embeddings ``[B, Dt]`` -> L2-normalised ``[B, joint_dim]``."""
        if report_emb.shape[-1] != self.text_dim:
            raise ConfigError("method.t3d.text_dim", f"is {self.text_dim} but the text encoder gives {report_emb.shape[-1]}-d embeddings")
        return F.normalize(self.text_proj(report_emb.float()).float(), dim=-1)

    def restoration(self, feat: torch.Tensor, batch: Mapping[str, Any], k: int) -> torch.Tensor:
        """Restoration loss on corrupted voxels; ``feat: [B*K, C, *s]`` from the corrupted crops."""
        assert self.decoder is not None
        text = mask = None
        if self.decoder.text_dim:
            text = batch["sentence_emb"].float().repeat_interleave(k, 0)  # [B*K, S, Dt]
            mask = batch["sentence_mask"].bool().repeat_interleave(k, 0)  # [B*K, S]
        self.decoder.grad_checkpointing = bool(getattr(self.encoder, "grad_checkpointing", False))
        pred = self.decoder(feat, text, mask).float()  # [B*K, 1, D, H, W]
        target = batch["image"].flatten(0, 1).float()
        if pred.shape != target.shape:
            raise ConfigError("data.crop_size", f"crops of {list(target.shape[2:])} voxels do not come back from the decoder "
                                                f"({list(pred.shape[2:])}): each side must be a multiple of the encoder's "
                                                f"downsampling factor {2 ** self.decoder.n_up}")
        return masked_restoration_loss(pred, target, batch["corrupt_mask"].flatten(0, 1), self.restoration_loss)

    # -- the step ----------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        x = batch["corrupted"]  # [B, K, 1, D, H, W]
        b, k = x.shape[:2]
        feat = self.encoder.forward_features(x.flatten(0, 1).float())  # [B*K, C, *s]
        h = feat.flatten(2).mean(-1).reshape(b, k, -1)  # [B, K, E] pooled crop features
        logs: Dict[str, Any] = {}
        loss = feat.new_zeros((), dtype=torch.float32)
        if self.align_weight > 0:
            v, t = self.volume_embedding(h), self.text_embedding(batch["report_emb"])  # [B, J] each
            if self.siglip is not None:
                align = self.siglip(v, t)
            else:
                align = soft_infonce_loss(v, t, None, self.align_temperature)
            loss = loss + self.align_weight * align
            logs["align"] = float(align.detach())
        if self.crop_weight > 0:
            if self.use_text:
                targets = report_targets(batch["report_emb"], self.report_temperature)  # [B, B]
            else:
                targets = torch.eye(b, device=x.device)  # own volume only
            crop = crop_soft_infonce(self.crop_proj(h), targets, self.crop_temperature)
            loss = loss + self.crop_weight * crop
            logs["crop"] = float(crop.detach())
        if self.decoder is not None:
            rest = self.restoration(feat, batch, k)
            loss = loss + self.restoration_weight * rest
            logs["restore"] = float(rest.detach())
        return {"loss": loss, **logs}

    def view_generator(self) -> ViewGenerator:
        return self.views

    @torch.no_grad()
    def embed_volume(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops of one or more volumes ``[B, K, 1, D, H, W]`` -> ``[B, joint_dim]`` (evaluation)."""
        b, k = crops.shape[:2]
        h = self.encoder(crops.flatten(0, 1).float()).reshape(b, k, -1)
        return self.volume_embedding(h)


@METHODS.register("t3d_vision")
class T3DVision(T3D):
    """Vision-only baseline of T3D: the same crops, encoder and restoration, no report.

    Crop-to-crop InfoNCE with hard positives (crops of the same volume), plain
    restoration (no cross-attention); ``align_weight`` and
    ``text_restoration`` are ignored.
    """

    use_text = False
