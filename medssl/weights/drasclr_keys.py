"""Key mapper for the authors' released DrasCLR checkpoints onto medssl's ``cond_cnn3d``.

The released training script (Yu et al., MedIA 2024) saves the MoCo module,
``{"state_dict": ...}``, with the query encoder under ``encoder_q.`` (and
``module.`` in front when trained with DataParallel/DDP), the momentum
encoder under ``encoder_k.`` and the location queues as ``queue*`` buffers.
The query encoder's module names equal ours (the deterministic-weights parity
test in tests/backbones/test_cond_cnn3d.py loads them 1:1), so the mapping:

- strips any leading run of ``module.`` / ``encoder_q.``;
- drops ``encoder_k.*`` (the momentum copy) and the queue buffers;
- with the MoCo v2 MLP head (``fc.0`` Linear, ``fc.1`` ReLU, ``fc.2`` Linear),
  keeps ``fc.0`` as our ``fc`` (the projection ``z = fc(h)``) and drops
  ``fc.2`` (the MLP's second layer belongs to the pretraining head, not to
  the backbone; the 128-d ``h`` used downstream does not depend on it).

``released_kwargs`` reads the backbone arguments off the tensor shapes.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional

from .registry import register_key_mapper

SOURCE = "DrasCLR (Yu et al., Medical Image Analysis 2024)"

_PREFIXES = ("module.", "encoder_q.")
_BACKBONE = re.compile(
    r"^(conv[1-4]|bn[1-4]|downsample[1-3]\.(conv[1-3]|bn[1-3]))\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked|_routing_fn\.fc\.(weight|bias))$"
)
_DROP = re.compile(r"^(encoder_k\.|queue)")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


@register_key_mapper("cond_cnn3d")
def map_drasclr_key(key: str) -> Optional[str]:
    """Released DrasCLR key -> medssl ``CondCNN3d`` key (``None``: drop on purpose; ``KeyError``: unknown)."""
    if _DROP.match(key) or _DROP.match(key.removeprefix("module.")):
        return None
    k = _strip(key)
    if _DROP.match(k):
        return None
    if _BACKBONE.match(k):
        return k
    m = re.match(r"^fc\.(?:0\.)?(weight|bias)$", k)
    if m:
        return f"fc.{m.group(1)}"
    if re.match(r"^fc\.2\.(weight|bias)$", k):
        return None
    raise KeyError(key)


def released_kwargs(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """``CondCNN3d`` kwargs that fit a released DrasCLR state dict (any prefixes)."""
    own = {}
    for key, value in sd.items():
        new = map_drasclr_key(key)
        if new is not None:
            own[new] = value
    need = ["conv1.weight", "downsample1.conv1.weight", "downsample2.conv1.weight", "downsample3.conv1.weight",
            "conv3.weight", "fc.weight"]
    missing = [k for k in need if k not in own]
    if missing:
        raise KeyError(f"not a DrasCLR encoder state dict: missing {missing}")
    w = own["conv1.weight"]  # [E, C_out, C_in, 3, 3, 3]
    router = own.get("conv1._routing_fn.fc.weight")  # [E, loc_dim]
    return {
        "in_channels": int(w.shape[2]),
        "widths": [int(own[k].shape[1]) for k in need[:5]],
        "num_experts": int(w.shape[0]),
        "loc_dim": int(router.shape[1]) if router is not None else 3,
        "rep_dim": int(own["fc.weight"].shape[0]),
        "conditioned": router is not None,
    }

