"""The evaluation of UniMiSS and UniMiSS+: their segmentation networks and task, and their evaluation adapter.

The adapter (:class:`UniMiSSEvalAdapter`, registered in
:data:`medssl.registry.EVAL_ADAPTERS` under ``unimiss`` and ``unimiss_plus``)
tells the generic evaluation the 2D input size of their checkpoints; the
task ``mit_segmentation`` (registered in :data:`medssl.registry.TASKS`)
fine-tunes the segmentation networks below.

MiT (Xie et al., UniMiSS, ECCV 2022), segmentation fine-tuning: the
pretrained MiT encoder without its cls token, the same 3 transformer decoder
stages (their pretrained weights are reused when the backbone has them), then
ConvTranspose 48->32 + the stem skip + a conv block, an upsampling x(1, 2, 2)
(x2 in 2D) back to the input grid and a 1x1 classifier; deep supervision by a
1x1 classifier on each decoder stage (256, 128, 48 channels). Running without
the cls token: each stage embeds its map, adds the spatial part of its
positional embedding (the cls slot dropped) and runs its blocks with
``num_cls=0``, as the released segmentation network does.

MiT+ (Xie et al., UniMiSS+, TPAMI 2024): the pretrained encoder run as in
pretraining (with its cls token) and the whole pretrained reconstruction
decoder (3 token stages, LayerNorm, ConvTranspose + conv1 skip + conv,
ConvTranspose + conv0 skip); its 1x1 reconstruction conv is set aside for a
conv block and a 1x1 classifier on the decoder's full-resolution map; deep
supervision by 1x1 classifiers on the conv1-level map and the last two token
stages (64, 128, 256 channels for the authors' widths).

``forward(x)`` returns logits ``[B, K, *S]``; in training mode with
``deep_supervision`` a list ``[main, ...]`` (coarser logits at their own
grids, finest first) that :func:`deep_supervision_loss` weights 1, 1/2, 1/4,
1/8 (normalised; nnU-Net's scheme).

Fine-tuning is the harness's (:func:`medssl.eval.segmentation.fit_segmenter`:
warm-up + poly decay, the encoder at ``encoder_lr_scale``, class-balanced
foreground patches, augmentation) with the deep-supervision loss, on the
harness's data-sized patch rounded down to what the decoder restores
(multiples of 16 x 32 x 32 for MiT, 4 x 32 x 32 for MiT+; :func:`mit_patch_size`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.mit_layers import ConvNormAct, TokenStage, conv_cls, path_key
from ..registry import EVAL_ADAPTERS
from ..views.cross_dim import to_channels
from .base import EvalAdapter

#: The backbones :func:`mit_segnet` builds a network for.
MIT_BACKBONES = ("mit_tiny", "mit_small", "mit_plus")


def _run_stage(stage: TokenStage, fmap: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One MiT token stage without the cls token: ``[B, Ci, *S] -> [B, C, *G]``."""
    key = path_key(fmap.ndim - 2)
    e = stage.embed[key](fmap)
    if skip is not None:
        e = e + skip
    B, C, grid = e.shape[0], e.shape[1], tuple(e.shape[2:])
    x = e.flatten(2).transpose(1, 2) + stage.pos[key](grid)[:, stage.num_cls:]  # [B, N, C]
    for blk in stage.blocks:
        x = blk(x, grid, 0)
    return x.transpose(1, 2).reshape(B, C, *grid)


class _MiTSegBase(nn.Module):
    """What both networks share: argument checks, the input conversion, the chosen path."""

    def _setup(self, backbone: nn.Module, num_classes: int, spatial_dims: Optional[int], deep_supervision: bool,
               cache_spec: Optional[Dict[str, Any]], model_spec: Optional[Dict[str, Any]]) -> int:
        from ..normalisation import needs_conversion

        self.cache_spec, self.model_spec = cache_spec, model_spec
        self._convert = needs_conversion(cache_spec, model_spec)
        if num_classes < 2:
            raise ValueError(f"num_classes: must be >= 2 (background + one class), got {num_classes}")
        d = int(spatial_dims or backbone.spatial_dims)
        if d not in backbone.paths:
            raise ValueError(f"spatial_dims: {d} is not a path of this backbone ({backbone.paths})")
        self.spatial_dims, self.num_classes, self.deep_supervision = d, int(num_classes), bool(deep_supervision)
        self.in_channels = int(backbone.in_channels_by_path[d])
        self.embed_dim = int(backbone.embed_dim)
        self._key = path_key(d)
        return d

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"x: expected a [B, C, *S] tensor with {self.spatial_dims} spatial dims, got {tuple(x.shape)}")
        if self._convert:
            from ..normalisation import convert

            x = convert(x, self.cache_spec, self.model_spec)
        return to_channels(x, self.in_channels)


class MiTSegNet(_MiTSegBase):
    """``x: [B, C, *S] -> logits [B, num_classes, *S]`` on a MiT backbone (2D or 3D by ``spatial_dims``).

    Args:
        backbone: a :class:`~medssl.backbones.mit.MiT` (its encoder; its decoder when built).
        num_classes: output classes including background.
        spatial_dims: the dimensionality this network segments (a path of the backbone).
        deep_supervision: return the stage logits too in training mode.
        cache_spec, model_spec: ``x`` holds cache values scaled by ``cache_spec``;
            they are converted to ``model_spec`` (the checkpoint's recorded
            normalisation) first (:func:`medssl.normalisation.convert`).
    """

    def __init__(self, backbone: nn.Module, *, num_classes: int, spatial_dims: Optional[int] = None,
                 deep_supervision: bool = True, cache_spec: Optional[Dict[str, Any]] = None,
                 model_spec: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if not hasattr(backbone, "encoder") or not hasattr(backbone.encoder, "stem"):
            raise ValueError("backbone: MiTSegNet needs a MiT backbone (mit_tiny / mit_small)")
        d = self._setup(backbone, num_classes, spatial_dims, deep_supervision, cache_spec, model_spec)
        self.encoder = backbone.encoder
        if backbone.decoder is None:
            from ..backbones.mit import MiTDecoder

            self.decoder = MiTDecoder(backbone.encoder.stage_grids, paths=backbone.paths)
        else:
            self.decoder = backbone.decoder
        dims = list(self.decoder.dims)  # [256, 128, 48]
        self.up = conv_cls(d, transposed=True)(dims[-1], 32, kernel_size=2, stride=2)
        self.block = nn.Sequential(ConvNormAct(d, 32, 32, 3, 1, 1), ConvNormAct(d, 32, 32, 3, 1, 1))
        self.classifier = conv_cls(d)(32, num_classes, kernel_size=1)
        self.ds_heads = nn.ModuleList([conv_cls(d)(c, num_classes, kernel_size=1) for c in dims])
        self.final_scale = (1, 2, 2) if d == 3 else (2, 2)

    def forward(self, x: torch.Tensor) -> Any:
        x = self._inputs(x)
        stem = self.encoder.stem[self._key](x)  # [B, 32, *S/stem]
        maps, h = [stem], stem
        for stage in self.encoder.stages:
            h = _run_stage(stage, h)
            maps.append(h)
        outs: List[torch.Tensor] = []
        for i, stage in enumerate(self.decoder.stages):
            h = _run_stage(stage, h, skip=maps[-2 - i])
            outs.append(h)
        h = self.decoder.norm(h.movedim(1, -1)).movedim(-1, 1)  # final LayerNorm over channels
        h = self.block(self.up(h) + stem)
        h = F.interpolate(h, scale_factor=self.final_scale, mode="trilinear" if self.spatial_dims == 3 else "bilinear",
                          align_corners=False)
        main = self.classifier(h)  # [B, K, *S]
        if self.training and self.deep_supervision:
            return [main] + [head(o) for head, o in zip(reversed(self.ds_heads), reversed(outs))]
        return main


class MiTPlusSegNet(_MiTSegBase):
    """``x: [B, C, *S] -> logits [B, num_classes, *S]`` on a MiT+ backbone and its pretrained decoder.

    Args as :class:`MiTSegNet`; ``backbone`` is a :class:`~medssl.backbones.mit_plus.MiTPlus`
    (any ``width`` / depths). Without a decoder (``with_decoder=False``) a new one is built.
    """

    def __init__(self, backbone: nn.Module, *, num_classes: int, spatial_dims: Optional[int] = None,
                 deep_supervision: bool = True, cache_spec: Optional[Dict[str, Any]] = None,
                 model_spec: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        from ..backbones.mit_plus import MiTPlus, MiTPlusDecoder

        if not isinstance(backbone, MiTPlus):
            raise ValueError("backbone: MiTPlusSegNet needs a MiT+ backbone (mit_plus)")
        d = self._setup(backbone, num_classes, spatial_dims, deep_supervision, cache_spec, model_spec)
        c0, c1, *enc = [int(c) for c in backbone.feature_channels]  # [32, 64 | 128, 256, 320, 320]
        self.encoder = backbone.encoder
        if backbone.decoder is None:
            ch = backbone.in_channels_by_path
            self.decoder = MiTPlusDecoder(backbone.encoder.stage_grids, backbone.paths, ch[2], ch[3],
                                          enc_dims=enc, conv_dims=(c0, c1))
        else:
            self.decoder = backbone.decoder
        self.block = ConvNormAct(d, c0, c0, 3, 1, 1)
        self.classifier = conv_cls(d)(c0, num_classes, kernel_size=1)
        # deep supervision, finest first: the conv1-level map, then token stages 3 and 2 (enc[0], enc[1] channels)
        self.ds_heads = nn.ModuleList([conv_cls(d)(c, num_classes, kernel_size=1) for c in (c1, enc[0], enc[1])])

    def forward(self, x: torch.Tensor) -> Any:
        x = self._inputs(x)
        maps, _ = self.encoder(x)  # [conv0, conv1, s1..s4], the pretraining forward (cls token included)
        outs = self.decoder.stage_maps(maps)  # [stage1, stage2, stage3, conv1-level, full resolution]
        main = self.classifier(self.block(outs[-1]))  # [B, K, *S]
        if self.training and self.deep_supervision:
            return [main] + [head(o) for head, o in zip(self.ds_heads, (outs[3], outs[2], outs[1]))]
        return main


def mit_segnet(backbone: nn.Module, **kwargs: Any) -> nn.Module:
    """:class:`MiTSegNet` for a MiT, :class:`MiTPlusSegNet` for a MiT+ (keyword arguments as theirs)."""
    from ..backbones.mit import MiT
    from ..backbones.mit_plus import MiTPlus

    if isinstance(backbone, MiTPlus):
        return MiTPlusSegNet(backbone, **kwargs)
    if isinstance(backbone, MiT):
        return MiTSegNet(backbone, **kwargs)
    raise ValueError(f"backbone: the MiT segmentation networks need a MiT or MiT+ backbone, got {type(backbone).__name__}")


def mit_patch_size(backbone: nn.Module, shapes: Sequence[Sequence[int]], base_patch: Sequence[int],
                   cfg: Any = None) -> tuple:
    """The harness's fine-tuning patch (:func:`~medssl.eval.segmentation.finetune_patch_size`) rounded down,
    per axis, to a multiple of what the decoder restores (``backbone.input_multiple``), never below ``base_patch``."""
    from ..eval.segmentation import finetune_patch_size

    patch = finetune_patch_size(backbone, shapes, base_patch, cfg)
    mult = backbone.input_multiple(len(base_patch))
    return tuple(max(int(b), (int(p) // int(m)) * int(m)) for p, b, m in zip(patch, base_patch, mult))


def deep_supervision_loss(outputs: Any, target: torch.Tensor, loss_fn: Any) -> torch.Tensor:
    """``sum_i w_i loss(out_i, target resized to out_i)`` with ``w = 1, 1/2, 1/4, ...`` normalised.

    ``target`` is the integer label map ``[B, 1, *S]``; it is resized by nearest neighbour.
    """
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    w = torch.tensor([0.5 ** i for i in range(len(outputs))])
    w = w / w.sum()
    total = outputs[0].new_zeros(())
    for wi, out in zip(w, outputs):
        t = target if out.shape[2:] == target.shape[2:] else F.interpolate(target.float(), size=out.shape[2:], mode="nearest").long()
        total = total + float(wi) * loss_fn(out, t)
    return total


def to_model_range(image: np.ndarray, normalisation: Optional[Dict[str, Any]],
                   cache_window: Sequence[float] = (-1024.0, 3071.0)) -> np.ndarray:
    """Cache CT values (a [0, 1] HU window) -> the checkpoint's recorded HU scaling (e.g. ``hu_scale``: HU / divisor).

    Other recorded kinds (none, per-image scalings) leave ``image`` as it is.
    """
    from ..normalisation import HU_KINDS, canonical_kind, convert

    if not normalisation or canonical_kind(normalisation.get("kind")) not in HU_KINDS:
        return image
    cache = {"kind": "ct_window", "window": [float(v) for v in cache_window]}
    return np.asarray(convert(np.asarray(image, dtype=np.float32), cache, normalisation), dtype=np.float32)


def finetune_mit_segmentation(
    backbone: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_classes: int,
    patch_size: Sequence[int],
    config: Any = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_spec: Optional[Dict[str, Any]] = None,
    model_spec: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """Fine-tune :func:`mit_segnet` of ``backbone`` on ``images[i]`` with ``labels[i]`` (Dice+CE, deep supervision).

    The loop, schedule, sampling and augmentation are the harness's
    (:func:`~medssl.eval.segmentation.fit_segmenter` with ``config``, a
    :class:`~medssl.eval.segmentation.SegFinetuneConfig`); the encoder's
    parameters take ``encoder_lr_scale``, the decoder (pretrained) and the
    new heads the full rate. ``images`` hold values scaled by
    ``cache_spec``; the network converts them to ``model_spec``.
    """
    from monai.losses import DiceCELoss

    from ..eval.segmentation import SegFinetuneConfig, fit_segmenter

    cfg = config or SegFinetuneConfig()
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"images/labels: need equally many, at least one ({len(images)} and {len(labels)})")
    torch.manual_seed(seed)
    net = mit_segnet(backbone, num_classes=num_classes, spatial_dims=len(patch_size), cache_spec=cache_spec,
                     model_spec=model_spec).to(device)
    enc = list(net.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in net.parameters() if id(p) not in enc_ids]
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    return fit_segmenter(net, enc, rest, images, labels, patch_size=patch_size, config=cfg, seed=seed, device=device,
                         loss=lambda out, y: deep_supervision_loss(out, y, dice_ce))


def _register_task() -> None:
    from ..eval.tasks import register_task

    @register_task("mit_segmentation", help="UniMiSS's MiT / MiT+ segmentation networks on their pretrained decoders "
                   "(deep supervision), fine-tuned as the segmentation task", primary_metric="mean_dice")
    def mit_segmentation_task(model: Any, data: Any, s: Any) -> List[Dict[str, Any]]:
        """As the ``segmentation`` task (schedule, data-sized patch, paired per-patient scores) with
        :func:`mit_segnet` fed the checkpoint's recorded normalisation.

        Cache values enter the network (patches padded with cache zeros, air
        for CT) and are converted inside it, for the random-init row alike.
        """
        from ..errors import DataError
        from ..eval.paired import CASES_KEY
        from ..eval.segmentation import evaluate_segmentation
        from ..eval.splits import label_subset
        from ..eval.tasks import _row, cases, split

        if model.backbone_name not in MIT_BACKBONES:
            raise DataError(data.source, f"mit_segmentation needs a MiT or MiT+ checkpoint ({', '.join(MIT_BACKBONES)}), "
                                         f"got backbone '{model.backbone_name}'")
        tr, te = split(data, s)
        tr = [i for i in tr if data.label(i) is not None]
        te = [i for i in te if data.label(i) is not None]
        if not tr or not te:
            raise DataError(data.source, "segmentation needs label maps ('label' in the manifest) in the train and test splits")
        cache_spec = data.cache_spec() if model.normalisation else None
        model_spec = model.input_spec(cache_spec)
        img = {i: data.image(i) for i in tr + te}
        labels = {i: data.label(i) for i in tr + te}
        n_cls = int(max(int(v.max()) for v in labels.values())) + 1
        names = data.label_names if data.label_names and len(data.label_names) == n_cls - 1 else None
        patch = mit_patch_size(model.build(0), [labels[i].shape for i in tr], model.patch_size, s.seg)
        rows: List[Dict[str, Any]] = []
        for seed in s.seeds:
            sub = label_subset(len(tr), s.label_fraction, seed, min_labels=1)
            ids = [tr[j] for j in sub]
            net = finetune_mit_segmentation(model.build(seed), [img[i] for i in ids], [labels[i] for i in ids],
                                            num_classes=n_cls, patch_size=patch, config=s.seg, seed=seed,
                                            device=s.device, cache_spec=cache_spec, model_spec=model_spec)
            per: Dict[str, np.ndarray] = {}
            m = evaluate_segmentation(net, [img[i] for i in te], [labels[i] for i in te], num_classes=n_cls,
                                      patch_size=patch, spacings=[data.spacing.get(i) for i in te],
                                      class_names=names, overlap=s.seg.overlap, device=s.device, per_case=per)
            rows.append(_row(model, "mit_segmentation", "finetune", "label", s.label_fraction, len(sub), seed, **m,
                             patch="x".join(str(v) for v in patch),
                             **{CASES_KEY: cases(te, "mean_dice", "mean", score=per["mean_dice"])}))
        return rows


_register_task()


class UniMiSSEvalAdapter(EvalAdapter):
    """UniMiSS / UniMiSS+: the 2D input size is the X-ray view size, ``method.views.xr_size``."""

    def patch_size(self, meta: Mapping[str, Any], dims: int) -> Optional[Tuple[int, ...]]:
        if dims != 2:
            return None
        xr = (((meta.get("config") or {}).get("method") or {}).get("views") or {}).get("xr_size")
        if not xr:
            return None
        return (int(xr), int(xr)) if isinstance(xr, (int, float)) else tuple(int(s) for s in xr)


ADAPTER = UniMiSSEvalAdapter()
for _name in ("unimiss", "unimiss_plus"):
    EVAL_ADAPTERS.register(_name)(ADAPTER)
