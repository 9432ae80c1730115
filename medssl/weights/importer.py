"""Turn a released checkpoint into a medssl release checkpoint (safetensors + JSON sidecar).

``import_released(src, arch, out)`` reads ``src`` safely
(:func:`~medssl.weights.loading.load_released_state_dict`), maps its keys
with the architecture's key mapper, builds the registered backbone with
kwargs that fit the file, loads the weights strictly and writes ``out`` with
:func:`medssl.checkpoint.save_release` (method ``"imported"``; the whole
backbone is the encoder). The sidecar records the input normalisation the
weights were trained with, so downstream code uses the same one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Union

from torch import nn

from ..errors import ConfigError
from ..normalisation import make_spec
from ..registry import BACKBONES
from ..anatomy.patch_source import NORMALISATION as DRASCLR_NORMALISATION
from .drasclr_keys import SOURCE as DRASCLR_SOURCE
from .drasclr_keys import released_kwargs as _drasclr_kwargs
from .loading import convert_state_dict, load_into, load_released_state_dict
from .mit_keys import released_kwargs as _mit_kwargs

#: UniMiSS / UniMiSS+ pretraining scaled CT by HU / 1024 (X-rays in [0, 1]); written under the
#: name imported checkpoints have always carried, an alias of ``hu_scale`` in :mod:`medssl.normalisation`.
CT_HU_SCALE = make_spec("ct_hu_scale", divisor=1024)


class ImportSpec(NamedTuple):
    kwargs: Callable[[Dict[str, Any]], Dict[str, Any]]
    normalisation: Dict[str, Any]
    source: str


IMPORT_SPECS: Dict[str, ImportSpec] = {
    "mit_tiny": ImportSpec(_mit_kwargs, CT_HU_SCALE, "UniMiSS (Xie et al., ECCV 2022)"),
    "mit_small": ImportSpec(_mit_kwargs, CT_HU_SCALE, "UniMiSS (Xie et al., ECCV 2022)"),
    "mit_plus": ImportSpec(_mit_kwargs, CT_HU_SCALE, "UniMiSS+ (Xie et al., TPAMI 2024)"),
    "cond_cnn3d": ImportSpec(_drasclr_kwargs, DRASCLR_NORMALISATION, DRASCLR_SOURCE),
}


class _Holder(nn.Module):
    """The method-shaped wrapper ``save_release`` expects: the backbone under ``encoder.``."""

    encoder_prefix = "encoder."

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.encoder = backbone


def _check_outputs(src: Path, out: Path) -> None:
    """``out`` and its sidecar must not be ``src``, nor replace a release checkpoint that is not an import."""
    from ..checkpoint import check_release_outputs, is_release_checkpoint, sidecar_path

    check_release_outputs("--out", [out, sidecar_path(out)], [src], keep_releases=False)
    if is_release_checkpoint(out):
        try:
            method = json.loads(sidecar_path(out).read_text(encoding="utf-8")).get("method")
        except (OSError, ValueError):
            method = None
        if method != "imported":  # a trained checkpoint; re-running an import may replace its own output
            raise ConfigError("--out", f"{out} is a release checkpoint of a trained '{method}' model; "
                              "importing never replaces one: write to another path")


def import_released(
    src: Union[str, Path], arch: str, out: Union[str, Path], trust: bool = False, select: str = "auto"
) -> Path:
    """Convert ``src`` (a released ``arch`` checkpoint) into the release checkpoint ``out`` (.safetensors)."""
    if arch not in IMPORT_SPECS:
        raise ConfigError("arch", f"no importer for '{arch}' (known: {', '.join(sorted(IMPORT_SPECS))})")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError("--out", f"a release checkpoint ends in .safetensors, got {out}")
    _check_outputs(Path(src), out)
    spec = IMPORT_SPECS[arch]
    BACKBONES.get(arch)  # imports the registered backbone modules

    sd = load_released_state_dict(src, trust=trust, select=select)
    converted, dropped = convert_state_dict(sd, arch, source=src)
    kwargs = spec.kwargs(sd)
    backbone = BACKBONES.build(arch, **kwargs)
    load_into(backbone, converted, source=src)
    from ..checkpoint import save_release

    cfg = {
        "method": {"name": "imported"},
        "backbone": {"name": arch, **kwargs},
        "imported": {"source_file": str(src), "source": spec.source, "dropped_keys": len(dropped)},
    }
    data_meta = {"normalisation": spec.normalisation}
    return save_release(out, _Holder(backbone), cfg, data_meta)
