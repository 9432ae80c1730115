"""DrasCLR's location-conditioned 3D CNN (Yu et al., Medical Image Analysis 2024).

Every convolution is a :class:`CondConv3d`: ``num_experts`` kernels mixed per
sample by a router ``sigmoid(Linear(loc))`` on the patch's normalised atlas
location ``loc in [-1, 1]^3``; the bias is shared. The network is a plain
CNN without skips, each conv followed by BatchNorm3d and ELU::

    32^3 --conv1--> 32 --conv2 s2--> 16 --block1--> 8 --block2--> 4 --block3--> 2
         --conv3--> 2 --conv4 s2--> 1      (channels 1, 8, 8, 16, 32, 64, 128, 128)

A block is (conv, conv, conv stride 2). ``h`` (128-d) is the representation,
``z = fc(h)`` the projection.

The released implementation mixed kernels in a Python loop over samples. Here
the mixing is batched: the kernel is mixed once per distinct location in the
batch; a batch at one location (the released schedule, and what the patch
source's location-grouped order gives) runs a single convolution, a few
locations one convolution each. Many locations run one grouped convolution
with a kernel per sample where the output has many positions; where it has
few (the 2^3 and 1^3 layers, whose per-sample kernels are larger than their
outputs) all experts run as one GEMM over the unfolded patches and the
outputs are mixed per sample. All equal the per-sample loop (tested, values
and gradients). Module names match the released state dict, so the authors'
checkpoints map by prefix stripping only.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import BACKBONES
from .base import Backbone


class _Router(nn.Module):
    """Mixing weights ``sigmoid(fc(loc))``: [B, 3] -> [B, E]."""

    def __init__(self, loc_dim: int, num_experts: int):
        super().__init__()
        self.fc = nn.Linear(loc_dim, num_experts)

    def forward(self, loc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(loc))


class CondConv3d(nn.Module):
    """A 3D convolution whose kernel is a location-dependent mix of expert kernels.

    ``weight``: [E, C_out, C_in, k, k, k]; ``bias``: [C_out] (shared by experts).
    ``forward(x: [B, C_in, D, H, W], loc: [B, loc_dim]) -> [B, C_out, D', H', W']``.
    With ``conditioned=False`` it is a plain convolution. A batch at one
    location runs one convolution with the mixed kernel; up to
    ``max_loop_locations`` distinct locations run one convolution each; more
    run one grouped convolution with a kernel per sample, or, when the output
    has at most ``gemm_max_positions`` positions per sample, all experts as
    one GEMM mixed per sample (:meth:`_expert_gemm`; ``E`` times the
    multiply-adds, but dense, and no per-sample kernel is formed).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        num_experts: int = 8,
        loc_dim: int = 3,
        conditioned: bool = True,
        max_loop_locations: int = 4,
        gemm_max_positions: int = 8,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts: must be >= 1, got {num_experts}")
        self.stride, self.padding = stride, padding
        self.conditioned = conditioned
        self.max_loop_locations = max_loop_locations
        self.gemm_max_positions = gemm_max_positions
        experts = num_experts if conditioned else 1
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(experts, out_channels, in_channels, k, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if conditioned:
            self._routing_fn = _Router(loc_dim, experts)
        fan_in = in_channels * k ** 3
        for e in range(experts):
            nn.init.kaiming_uniform_(self.weight.data[e], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int = 1) -> torch.Tensor:
        return F.conv3d(x, w, b, stride=self.stride, padding=self.padding, groups=groups)

    def _out_positions(self, x: torch.Tensor) -> Tuple[int, int, int]:
        k = self.weight.shape[-1]
        return tuple((s + 2 * self.padding - k) // self.stride + 1 for s in x.shape[2:])  # type: ignore[return-value]

    def _expert_gemm(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """All experts as one GEMM over unfolded patches, mixed per sample: ``x: [B, Ci, ...], r: [B, E]``.

        ``y_b = sum_e r_be (W_e * x_b) + bias``: E times the multiply-adds of
        one convolution, but no per-sample kernel is formed; cheap where the
        output has few positions per sample and the kernels are large.
        """
        B, E = x.shape[0], self.weight.shape[0]
        Co, Ci, k = self.weight.shape[1], self.weight.shape[2], self.weight.shape[-1]
        p, s = self.padding, self.stride
        xp = F.pad(x, (p, p, p, p, p, p))
        u = xp.unfold(2, k, s).unfold(3, k, s).unfold(4, k, s)  # [B, Ci, d, h, w, k, k, k]
        d, h, w = u.shape[2:5]
        cols = u.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(B * d * h * w, Ci * k ** 3)  # [B*L, Ci*k^3]
        ye = cols @ self.weight.reshape(E * Co, Ci * k ** 3).t()  # [B*L, E*Co]: every expert at every position
        y = torch.einsum("blec,be->bcl", ye.view(B, d * h * w, E, Co), r)  # [B, Co, L]: mixed per sample
        return (y + self.bias.view(1, Co, 1)).reshape(B, Co, d, h, w)

    def forward(self, x: torch.Tensor, loc: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.conditioned:
            return self._conv(x, self.weight[0], self.bias)
        if loc is None:
            raise ValueError("loc: a location-conditioned convolution needs the patch locations")
        B = x.shape[0]
        E, Co, Ci = self.weight.shape[:3]
        kshape = self.weight.shape[3:]
        uniq, inverse = torch.unique(loc, dim=0, return_inverse=True)  # [U, 3], [B]
        r = self._routing_fn(uniq)  # [U, E]
        if len(uniq) > self.max_loop_locations and math.prod(self._out_positions(x)) <= self.gemm_max_positions:
            # many locations, few output positions: all experts in one GEMM, mixed per sample
            return self._expert_gemm(x, r[inverse])
        w = (r @ self.weight.reshape(E, -1)).reshape(len(uniq), Co, Ci, *kshape)  # one kernel per location
        if len(uniq) == 1:  # the whole batch at one location: one plain convolution
            return self._conv(x, w[0], self.bias)
        if len(uniq) <= self.max_loop_locations:  # a few locations: one convolution per location
            order = torch.argsort(inverse)
            counts = torch.bincount(inverse, minlength=len(uniq)).tolist()
            parts = [self._conv(xs, w[u], self.bias) for u, xs in enumerate(torch.split(x[order], counts)) if counts[u]]
            return torch.cat(parts)[torch.argsort(order)]
        # many locations, many output positions: per-sample kernels as one grouped convolution (samples as groups)
        wb = w[inverse].reshape(B * Co, Ci, *kshape)
        y = self._conv(x.reshape(1, B * Ci, *x.shape[2:]), wb, self.bias.repeat(B), groups=B)
        return y.reshape(B, Co, *y.shape[2:])

    def forward_loop(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """The released per-sample loop (a reference for tests and benchmarks)."""
        outs = []
        for i in range(x.shape[0]):
            r = self._routing_fn(loc[i : i + 1])[0]
            w = torch.einsum("e,eoikjl->oikjl", r, self.weight)
            outs.append(self._conv(x[i : i + 1], w, self.bias))
        return torch.cat(outs)


class _Block(nn.Module):
    """(conv, conv, conv stride 2), each with BatchNorm3d + ELU."""

    def __init__(self, cin: int, cout: int, **conv_kw):
        super().__init__()
        self.conv1 = CondConv3d(cin, cout, **conv_kw)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = CondConv3d(cout, cout, **conv_kw)
        self.bn2 = nn.BatchNorm3d(cout)
        self.conv3 = CondConv3d(cout, cout, stride=2, **conv_kw)
        self.bn3 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor, loc: Optional[torch.Tensor], loop: bool = False) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.elu(bn(conv.forward_loop(x, loc) if loop else conv(x, loc)))
        return x


@BACKBONES.register("cond_cnn3d", help="DrasCLR location-conditioned 3D CNN (CondConv experts, 32^3 patches)")
class CondCNN3d(Backbone):
    """DrasCLR's encoder for 32^3 patches with 3-d atlas locations.

    ``forward(x: [B, 1, 32, 32, 32], loc: [B, 3]) -> h: [B, 128]``;
    ``project(h) -> z: [B, rep_dim]``. ``conditioned=False`` gives the same
    network with plain convolutions (the paper's ablation).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32, 64, 128),
        num_experts: int = 8,
        loc_dim: int = 3,
        rep_dim: int = 128,
        conditioned: bool = True,
        spatial_dims: int = 3,
    ):
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"spatial_dims: cond_cnn3d is 3D only, got {spatial_dims}")
        if len(widths) != 5:
            raise ValueError(f"widths: expected 5 channel counts, got {list(widths)}")
        kw = dict(num_experts=num_experts, loc_dim=loc_dim, conditioned=conditioned)
        c0, c1, c2, c3, c4 = widths
        self.spatial_dims, self.in_channels = 3, in_channels
        self.conditioned = conditioned
        self.location_dim = int(loc_dim)
        self.embed_dim = c4
        self.feature_channels = [c0, c1, c2, c3, c4]
        self.conv1 = CondConv3d(in_channels, c0, **kw)
        self.bn1 = nn.BatchNorm3d(c0)
        self.conv2 = CondConv3d(c0, c0, stride=2, **kw)
        self.bn2 = nn.BatchNorm3d(c0)
        self.downsample1 = _Block(c0, c1, **kw)
        self.downsample2 = _Block(c1, c2, **kw)
        self.downsample3 = _Block(c2, c3, **kw)
        self.conv3 = CondConv3d(c3, c4, **kw)
        self.bn3 = nn.BatchNorm3d(c4)
        self.conv4 = CondConv3d(c4, c4, stride=2, **kw)
        self.bn4 = nn.BatchNorm3d(c4)
        self.fc = nn.Linear(c4, rep_dim)

    def _loc(self, x: torch.Tensor, loc: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if not self.conditioned:
            return None
        if loc is None:  # no location given: the atlas centre
            return x.new_zeros(x.shape[0], self.conv1._routing_fn.fc.in_features)
        if loc.shape[0] != x.shape[0]:
            raise ValueError(f"loc: expected {x.shape[0]} locations, got {loc.shape[0]}")
        return loc.to(x.dtype)

    def forward_intermediates(
        self, x: torch.Tensor, loc: Optional[torch.Tensor] = None, loop: bool = False
    ) -> List[torch.Tensor]:
        loc = self._loc(x, loc)

        def cbe(conv: CondConv3d, bn: nn.BatchNorm3d, t: torch.Tensor) -> torch.Tensor:
            return F.elu(bn(conv.forward_loop(t, loc) if loop and loc is not None else conv(t, loc)))

        feats = []
        x = cbe(self.conv2, self.bn2, cbe(self.conv1, self.bn1, x))  # [B, 8, 16^3]
        feats.append(x)
        for block in (self.downsample1, self.downsample2, self.downsample3):
            x = block(x, loc, loop=loop and loc is not None)  # 8^3, 4^3, 2^3
            feats.append(x)
        x = cbe(self.conv4, self.bn4, cbe(self.conv3, self.bn3, x))  # [B, 128, 1^3]
        feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor, loc: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.forward_intermediates(x, loc)[-1]

    def forward(self, x: torch.Tensor, loc: Optional[torch.Tensor] = None) -> torch.Tensor:
        """h: [B, 128], the spatially pooled last feature map."""
        return self.forward_features(x, loc).flatten(2).mean(-1)

    @property
    def projection_dim(self) -> int:
        """``rep_dim``, the width of :meth:`project`'s output."""
        return int(self.fc.out_features)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = fc(h): [B, rep_dim]."""
        return self.fc(h)

    def output_size(self, patch: Tuple[int, int, int] = (32, 32, 32)) -> Tuple[int, ...]:
        return tuple(-(-s // 32) for s in patch)
