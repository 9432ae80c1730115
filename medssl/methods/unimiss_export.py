"""A 2D view of a UniMiSS / UniMiSS+ release checkpoint, for X-ray evaluation.

A pretrained MiT holds both paths; its release checkpoint records one
``spatial_dims`` (3 for the presets) and ``spatial_dims_supported: [2, 3]``.
The evaluation harness runs such a checkpoint on X-rays directly (grey
repeated to the 2D path's channels; :mod:`medssl.eval.inputs`), so this
export is for tools that want a plain single-channel 2D encoder.
:func:`export_2d` writes a second release checkpoint
with the same weights whose sidecar says ``spatial_dims: 2, in_channels: 1``:
the 2D stem's 3 input channels are summed into one (exact for the grey
images repeated to 3 channels that pretraining used), and MiT+'s 2D
reconstruction conv is averaged over its 3 (identical-target) outputs.

    python -m medssl.methods.unimiss_export RUN/checkpoints/final.safetensors RUN/checkpoints/final_2d.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import CheckpointError

STEM_2D = ("encoder.stem.2d.conv.weight", "encoder.conv0.2d.conv.weight")  # MiT, MiT+
RECON_2D = ("decoder.head.2d.weight", "decoder.head.2d.bias")  # MiT+


def export_2d(path: Union[str, Path], out: Union[str, Path], *, patch_size: Optional[Sequence[int]] = None) -> Path:
    """Write ``out`` (.safetensors + sidecar): the encoder of ``path`` as a 1-channel 2D checkpoint.

    ``patch_size``: the 2D input size recorded for evaluation (default: the
    2D view size of the run's config, ``method.views.xr_size``).
    """
    from safetensors.torch import save_file

    from ..checkpoint import load_release, sidecar_path

    state, meta = load_release(path)
    prefix = meta["encoder_prefix"]
    bb = dict(meta.get("backbone") or {})
    if bb.get("name") not in ("mit_tiny", "mit_small", "mit_plus"):
        raise CheckpointError(f"{path}: export_2d needs a MiT / MiT+ checkpoint, got backbone '{bb.get('name')}'")
    kwargs = dict(bb.get("kwargs") or {})
    if 2 not in [int(p) for p in kwargs.get("paths", (2, 3))]:
        raise CheckpointError(f"{path}: the backbone has no 2D path")
    enc = {k: v for k, v in state.items() if k.startswith(prefix)}
    folded = False
    for key in STEM_2D:
        k = prefix + key
        if k in enc and enc[k].shape[1] != 1:
            enc[k] = enc[k].sum(dim=1, keepdim=True).contiguous()  # [32, 3, 7, 7] -> [32, 1, 7, 7]
            folded = True
    if not folded:
        raise CheckpointError(f"{path}: no 3-channel 2D stem found under '{prefix}'")
    for key in RECON_2D:
        k = prefix + key
        if k in enc:
            enc[k] = enc[k].mean(dim=0, keepdim=True).contiguous()
    kwargs.update(spatial_dims=2, in_channels=1)
    views = ((meta.get("config") or {}).get("method") or {}).get("views") or {}
    size = patch_size or ([int(views["xr_size"])] * 2 if "xr_size" in views else None)
    if size is None:
        raise CheckpointError(f"{path}: give patch_size (the config records no method.views.xr_size)")
    norm = meta.get("normalisation") or {}
    new = dict(meta)
    new.update(backbone={"name": bb["name"], "kwargs": kwargs}, spatial_dims=2, in_channels=1,
               patch_size=[int(s) for s in size], encoder_keys=sorted(enc),
               normalisation=norm.get("xray") or {"kind": "minmax", "min": 0.0, "max": 1.0},
               source_checkpoint=str(path), spacing=None)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"out: a release checkpoint ends in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(enc, str(out), metadata={"format": meta.get("format", "medssl-release")})
    sidecar_path(out).write_text(json.dumps(new, indent=2, default=str))
    return out


if __name__ == "__main__":  # pragma: no cover - thin command-line wrapper
    if len(sys.argv) != 3:
        sys.exit("usage: python -m medssl.methods.unimiss_export CHECKPOINT.safetensors OUT.safetensors")
    print(export_2d(sys.argv[1], sys.argv[2]))
