"""nnU-Net's Residual Encoder U-Net (``ResidualEncoderUNet`` of dynamic-network-architectures) as a backbone.

Isensee et al., "nnU-Net Revisited: A Call for Rigorous Validation in 3D
Medical Image Segmentation", MICCAI 2024 (the ResEnc M / L / XL presets);
Isensee et al., Nature Methods 2021 (nnU-Net). The network is built by
dynamic-network-architectures itself, so its state-dict keys are the ones
nnU-Net writes and reads (``encoder.stem...``, ``encoder.stages...``,
``decoder.stages...``): ``medssl export --to nnunet`` needs no key mapping.

The architecture comes from one of:

- an nnU-Net plans file and configuration (``plans`` + ``configuration``),
  the network nnU-Net will fine-tune;
- ``arch``: the plans' ``arch_kwargs`` themselves (what a release checkpoint
  records, so that it loads without the plans file);
- defaults for a ``patch_size`` (and ``spacing``): the topology nnU-Net's
  residual-encoder planners derive (pool an axis while its feature map stays
  at least 4 wide and its spacing within twice the finest; 3x3x3 kernels;
  ``base_features * 2**stage`` channels up to ``max_features``; 1, 3, 4, 6,
  6, ... residual blocks; one decoder convolution per stage). ResEnc M and L
  follow this recipe and differ only in the GPU memory their planner budgets,
  i.e. in the patch (and batch) size chosen: ResEnc L is this recipe at L's
  larger patch.

``decoder=False`` (the default) keeps the encoder only (SimCLR, MoCo, DINO,
T3D train it); ``decoder=True`` keeps the whole U-Net with ``out_channels``
outputs and adds :meth:`ResEncUNet.forward_dense` (the masked-reconstruction
method trains it). The export builds the decoder a method did not train
freshly, with nnU-Net's initialisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ._common import run_stage
from .base import Backbone

__all__ = ["ResEncUNet", "plan_topology", "default_arch", "build_network", "arch_summary", "ALLOWED_CLASSES"]

KEY = "backbone.resenc_unet"
#: ResEnc residual blocks per encoder stage (nnU-Net's residual-encoder planners).
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)

#: The class names a plans file may use, and the classes they stand for. Nothing else is imported.
ALLOWED_CLASSES: Dict[str, Dict[str, Any]] = {
    "conv_op": {"torch.nn.modules.conv.Conv2d": nn.Conv2d, "torch.nn.modules.conv.Conv3d": nn.Conv3d,
                "torch.nn.Conv2d": nn.Conv2d, "torch.nn.Conv3d": nn.Conv3d},
    "norm_op": {"torch.nn.modules.instancenorm.InstanceNorm2d": nn.InstanceNorm2d,
                "torch.nn.modules.instancenorm.InstanceNorm3d": nn.InstanceNorm3d,
                "torch.nn.InstanceNorm2d": nn.InstanceNorm2d, "torch.nn.InstanceNorm3d": nn.InstanceNorm3d,
                "torch.nn.modules.batchnorm.BatchNorm2d": nn.BatchNorm2d,
                "torch.nn.modules.batchnorm.BatchNorm3d": nn.BatchNorm3d,
                "torch.nn.BatchNorm2d": nn.BatchNorm2d, "torch.nn.BatchNorm3d": nn.BatchNorm3d},
    "dropout_op": {"torch.nn.modules.dropout.Dropout2d": nn.Dropout2d, "torch.nn.modules.dropout.Dropout3d": nn.Dropout3d,
                   "torch.nn.Dropout2d": nn.Dropout2d, "torch.nn.Dropout3d": nn.Dropout3d},
    "nonlin": {"torch.nn.LeakyReLU": nn.LeakyReLU, "torch.nn.modules.activation.LeakyReLU": nn.LeakyReLU,
               "torch.nn.ReLU": nn.ReLU, "torch.nn.modules.activation.ReLU": nn.ReLU,
               "torch.nn.GELU": nn.GELU, "torch.nn.modules.activation.GELU": nn.GELU},
}
#: arch_kwargs keys ResidualEncoderUNet takes (besides input_channels / num_classes / deep_supervision).
ARCH_KEYS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
             "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
             "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "stem_channels")
#: The entries that decide the shapes of the weights (compared by the nnU-Net export).
SHAPE_KEYS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage",
              "n_conv_per_stage_decoder", "conv_op", "conv_bias", "norm_op", "stem_channels")


def plan_topology(patch_size: Sequence[int], spacing: Optional[Sequence[float]] = None,
                  min_edge: int = 4) -> Dict[str, Any]:
    """Strides, kernel sizes and the padded patch size nnU-Net's planners derive for ``patch_size``.

    An axis is pooled (stride 2) at a stage while its feature map is at least
    ``2 * min_edge`` wide and its current spacing is less than twice the finest
    current spacing among the poolable axes; a lone poolable axis needs ``3 *
    min_edge``. Kernels become 3 on an axis once its spacing is within twice the
    finest; the bottleneck always uses 3. The patch is rounded up to a multiple
    of ``2**pools`` per axis. Returns ``{"strides", "kernel_sizes", "patch_size"}``.
    """
    dims = len(patch_size)
    size = [float(p) for p in patch_size]
    sp = [1.0] * dims if spacing is None else [float(s) for s in spacing]
    if len(sp) != dims:
        raise ConfigError(f"{KEY}.spacing", f"needs {dims} values (one per patch axis), got {list(spacing or [])}")
    strides: List[List[int]] = [[1] * dims]
    kernels: List[List[int]] = []
    pools = [0] * dims
    kernel = [1] * dims
    while True:
        wide = [d for d in range(dims) if size[d] >= 2 * min_edge]
        if not wide:
            break
        finest = min(sp[d] for d in wide)
        axes = [d for d in wide if sp[d] / finest < 2]
        if len(axes) == 1 and size[axes[0]] < 3 * min_edge:
            break
        overall = min(sp)
        kernel = [3 if (k == 3 or sp[d] / overall < 2) else 1 for d, k in enumerate(kernel)]
        strides.append([2 if d in axes else 1 for d in range(dims)])
        kernels.append(list(kernel))
        for d in axes:
            pools[d] += 1
            sp[d] *= 2
            size[d] = math.ceil(size[d] / 2)
    kernels.append([3] * dims)
    padded = [int(math.ceil(int(p) / 2 ** n) * 2 ** n) for p, n in zip(patch_size, pools)]
    return {"strides": strides, "kernel_sizes": kernels, "patch_size": padded}


def default_arch(patch_size: Sequence[int], spacing: Optional[Sequence[float]] = None, *, base_features: int = 32,
                 max_features: Optional[int] = None, n_blocks_per_stage: Optional[Sequence[int]] = None,
                 n_conv_per_stage_decoder: int = 1) -> Dict[str, Any]:
    """The ResEnc ``arch_kwargs`` (with class names, as a plans file holds them) for ``patch_size``."""
    dims = len(patch_size)
    if dims not in (2, 3):
        raise ConfigError(f"{KEY}.patch_size", f"needs 2 or 3 sizes, got {list(patch_size)}")
    if min(int(p) for p in patch_size) < 1:
        raise ConfigError(f"{KEY}.patch_size", f"sizes must be positive, got {list(patch_size)}")
    topo = plan_topology(patch_size, spacing)
    n = len(topo["strides"])
    top = int(max_features if max_features is not None else (320 if dims == 3 else 512))
    if int(base_features) < 1 or top < int(base_features):
        raise ConfigError(f"{KEY}.base_features", f"needs 1 <= base_features <= max_features, got {base_features}, {top}")
    blocks = list(RESENC_BLOCKS[:n]) if n_blocks_per_stage is None else [int(b) for b in n_blocks_per_stage]
    if len(blocks) != n or min(blocks) < 1:
        raise ConfigError(f"{KEY}.n_blocks_per_stage", f"patch {list(patch_size)} gives {n} stages; needs {n} "
                          f"positive block counts, got {blocks}")
    d = f"{dims}d"
    return {
        "n_stages": n,
        "features_per_stage": [min(top, int(base_features) * 2 ** i) for i in range(n)],
        "conv_op": f"torch.nn.modules.conv.Conv{d}",
        "kernel_sizes": topo["kernel_sizes"],
        "strides": topo["strides"],
        "n_blocks_per_stage": blocks,
        "n_conv_per_stage_decoder": [int(n_conv_per_stage_decoder)] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{d}",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (plans hold lists; JSON round trips give lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def check_arch(arch: Dict[str, Any], key: str = f"{KEY}.arch") -> Dict[str, Any]:
    """``arch`` with its class names checked against :data:`ALLOWED_CLASSES` and its lists per stage counted."""
    arch = _plain(dict(arch))
    unknown = [k for k in arch if k not in ARCH_KEYS]
    if unknown:
        raise ConfigError(key, f"unknown entries {unknown} (ResidualEncoderUNet takes: {', '.join(ARCH_KEYS)})")
    for k in ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
              "n_conv_per_stage_decoder", "norm_op", "nonlin"):
        if arch.get(k) is None:
            raise ConfigError(key, f"'{k}' is missing")
    for k, allowed in ALLOWED_CLASSES.items():
        name = arch.get(k)
        if name is not None and name not in allowed:
            raise ConfigError(key, f"{k} {name!r} is not one medssl builds (known: {', '.join(sorted(allowed))})")
    n = int(arch["n_stages"])
    for k in ("features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage"):
        if not isinstance(arch[k], list) or len(arch[k]) != n:
            raise ConfigError(key, f"{k} needs {n} entries (n_stages), got {arch[k]}")
    if not isinstance(arch["n_conv_per_stage_decoder"], list) or len(arch["n_conv_per_stage_decoder"]) != n - 1:
        raise ConfigError(key, f"n_conv_per_stage_decoder needs {n - 1} entries, got {arch['n_conv_per_stage_decoder']}")
    return arch


def arch_dims(arch: Dict[str, Any]) -> int:
    return 3 if ALLOWED_CLASSES["conv_op"][arch["conv_op"]] is nn.Conv3d else 2


def build_network(arch: Dict[str, Any], in_channels: int, num_classes: int, *, deep_supervision: bool = False,
                  initialise: bool = True) -> nn.Module:
    """``ResidualEncoderUNet(**arch)`` (class names resolved through :data:`ALLOWED_CLASSES`), initialised as
    nnU-Net does (``network.apply(network.initialize)``: He init, last norm of each residual block at zero)."""
    try:
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    except ImportError:
        raise ConfigError("backbone.name", "resenc_unet needs dynamic-network-architectures, an optional extra: "
                          "`pip install --no-deps dynamic-network-architectures==0.4.4` (docs/nnunet.md)") from None
    kwargs = dict(check_arch(arch))
    for k, allowed in ALLOWED_CLASSES.items():
        if kwargs.get(k) is not None:
            kwargs[k] = allowed[kwargs[k]]
    net = ResidualEncoderUNet(input_channels=int(in_channels), num_classes=int(num_classes),
                              deep_supervision=deep_supervision, **kwargs)
    if initialise:
        net.apply(net.initialize)
    return net


def arch_summary(arch: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``arch`` that decide weight shapes, as plain lists (for comparisons and messages)."""
    arch = _plain(dict(arch))
    return {k: arch.get(k) for k in SHAPE_KEYS}


@BACKBONES.register("resenc_unet")
class ResEncUNet(Backbone):
    """nnU-Net's Residual Encoder U-Net from a plans file, its ``arch_kwargs`` or the ResEnc recipe for a patch.

    ``forward_intermediates`` returns one map per encoder stage (the U-Net's
    skips, shallow to deep). Keys are nnU-Net's. With ``decoder=True`` the
    whole U-Net is kept and :meth:`forward_dense` gives ``out_channels``
    maps at the input resolution (the input must be divisible by the
    product of the strides per axis). nnU-Net reads neither ``decoder.seg_layers``
    (its output layers for its own labels) from pretrained weights; the
    deep-supervision ones (all but the last) are frozen here.
    """

    def __init__(
        self,
        plans: Optional[str] = None,
        configuration: str = "3d_fullres",
        arch: Optional[Dict[str, Any]] = None,
        patch_size: Optional[Sequence[int]] = None,
        spacing: Optional[Sequence[float]] = None,
        base_features: Optional[int] = None,
        max_features: Optional[int] = None,
        n_blocks_per_stage: Optional[Sequence[int]] = None,
        spatial_dims: Optional[int] = None,
        in_channels: int = 1,
        decoder: bool = False,
        out_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        given = [k for k, v in (("plans", plans), ("arch", arch)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"{KEY}.arch", "give either plans (+ configuration) or arch, not both")
        recipe = [k for k, v in (("spacing", spacing), ("base_features", base_features), ("max_features", max_features),
                                 ("n_blocks_per_stage", n_blocks_per_stage)) if v is not None]
        if given and recipe:
            raise ConfigError(f"{KEY}.{recipe[0]}", f"plans the ResEnc recipe for a patch size; with {given[0]} the "
                              f"network is given: leave {', '.join(recipe)} unset (null)")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"{KEY}.in_channels", f"must be a positive integer, got {in_channels!r}")
        self.plans_source: Optional[Dict[str, Any]] = None
        if plans is not None:
            from ..io.nnunet_plans import RESENC_CLASS, read_configuration

            conf = read_configuration(Path(plans), configuration)
            if conf.network_class != RESENC_CLASS:
                raise ConfigError(f"{KEY}.plans", f"{plans}: configuration '{configuration}' plans "
                                  f"{conf.network_class}; resenc_unet builds {RESENC_CLASS} (plan with "
                                  "nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM or ...ResEncL)")
            if conf.in_channels is not None and conf.in_channels != in_channels:
                raise ConfigError(f"{KEY}.in_channels", f"{in_channels}, but {plans} plans {conf.in_channels} "
                                  "input channels")
            if patch_size is not None and [int(p) for p in patch_size] != conf.patch_size:
                raise ConfigError(f"{KEY}.patch_size", f"{list(patch_size)} differs from the plans' "
                                  f"{conf.patch_size}; leave it unset with a plans file")
            arch, patch = conf.arch, conf.patch_size
            self.plans_source = {"plans": str(plans), "configuration": configuration, "plans_name": conf.plans_name}
        elif arch is not None:
            if patch_size is None:
                raise ConfigError(f"{KEY}.patch_size", "is needed with arch (the patch the network was planned for)")
            patch = [int(p) for p in patch_size]
        else:
            if patch_size is None:
                raise ConfigError(f"{KEY}.patch_size", "give plans (an nnU-Net plans file), arch, or the patch size "
                                  "to plan a ResEnc network for")
            arch = default_arch(patch_size, spacing, base_features=32 if base_features is None else base_features,
                                max_features=max_features,
                                n_blocks_per_stage=n_blocks_per_stage)
            patch = plan_topology(patch_size, spacing)["patch_size"]
        self.arch = check_arch(arch)
        dims = arch_dims(self.arch)
        if spatial_dims is not None and int(spatial_dims) != dims:
            raise ConfigError(f"{KEY}.spatial_dims", f"{spatial_dims}, but the network is {dims}D ({self.arch['conv_op']})")
        if len(patch) != dims:
            raise ConfigError(f"{KEY}.patch_size", f"needs {dims} sizes for a {dims}D network, got {patch}")
        self.spatial_dims = dims
        self.in_channels = int(in_channels)
        self.planned_patch_size = [int(p) for p in patch]
        self.has_decoder = bool(decoder)
        self.out_channels = int(out_channels) if out_channels is not None else self.in_channels
        if self.out_channels < 1:
            raise ConfigError(f"{KEY}.out_channels", f"must be a positive integer, got {out_channels!r}")
        net = build_network(self.arch, self.in_channels, self.out_channels)
        self.encoder = net.encoder  # keys encoder.stem.*, encoder.stages.* (nnU-Net's)
        if self.has_decoder:
            self.decoder = net.decoder  # keys decoder.stages.*, decoder.transpconvs.*, decoder.seg_layers.*
            for layer in list(self.decoder.seg_layers)[:-1]:  # deep-supervision outputs: never used here
                layer.requires_grad_(False)
        self.feature_channels = [int(f) for f in self.arch["features_per_stage"]]
        self.embed_dim = self.feature_channels[-1]
        self.total_stride = [math.prod(int(s[d]) for s in self.arch["strides"]) for d in range(dims)]

    def release_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments that rebuild this backbone without the plans file (recorded in checkpoints)."""
        return {"arch": _plain(self.arch), "patch_size": list(self.planned_patch_size), "in_channels": self.in_channels,
                "decoder": self.has_decoder, "out_channels": self.out_channels}

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x: [B, C, *S]`` -> one map per stage, ``[B, features_per_stage[i], *S / stride_i]``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"resenc_unet expects [B, {self.in_channels}, *{self.spatial_dims} sizes], got {tuple(x.shape)}")
        sizes = tuple(int(n) for n in x.shape[2:])
        if any(n % t for n, t in zip(sizes, self.total_stride)):  # the residual shortcuts pool by floor, convs by ceil
            raise ConfigError("crop size", f"resenc_unet: input sizes {sizes} must be divisible by the encoder's stride "
                                           f"product {tuple(self.total_stride)}")
        if math.prod(n // t for n, t in zip(sizes, self.total_stride)) <= 1:  # instance norm needs > 1 voxel per map
            raise ConfigError("crop size", f"resenc_unet: an input of {sizes} voxels leaves one voxel after the "
                                           f"encoder's strides (product {tuple(self.total_stride)}); use crops of at "
                                           "least twice that product along one axis")
        ck = self.grad_checkpointing
        h = run_stage(self.encoder.stem, x, ck) if self.encoder.stem is not None else x
        feats = []
        for stage in self.encoder.stages:
            h = run_stage(stage, h, ck)
            feats.append(h)
        return feats

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, *S]`` -> the whole U-Net's output ``[B, out_channels, *S]`` (``decoder=True`` only)."""
        if not self.has_decoder:
            raise ConfigError(f"{KEY}.decoder", "forward_dense needs the U-Net decoder: set backbone.decoder=true")
        return self.decoder(self.forward_intermediates(x))  # which checks the input sizes  # [B, out_channels, *S]
