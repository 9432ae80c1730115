"""Release checkpoints: safetensors weights plus a JSON sidecar that says what they are.

``final.safetensors`` holds the method's full state dict (encoder, heads,
teachers); ``final.json`` next to it records::

    {"format": "medssl-release", "format_version": 1,
     "method": name, "backbone": {"name": ..., "kwargs": {...}},
     "spatial_dims": 2|3, "in_channels": int, "embed_dim": int,
     "spatial_dims_supported": [2, 3] (only for backbones that run both, e.g. MiT),
     "spacing": [...], "normalisation": {...}, "patch_size": [...],
     "encoder_prefix": "encoder.", "encoder_keys": [...],
     "medssl_version": ..., "git_hash": ... | null, "config": {resolved run config}}

Loading reads tensors with safetensors and the sidecar with ``json``:
nothing is ever unpickled. :func:`load_encoder` rebuilds the backbone from
the registry and loads the encoder keys strictly; ``expect`` lets a caller
check spatial dims, channels, spacing or normalisation, and every mismatch is
named in one :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .errors import CheckpointError
from .io.atomic import atomic_path

__all__ = ["save_release", "load_release", "load_encoder", "export", "sidecar_path", "git_hash",
           "is_release_checkpoint", "check_release_outputs"]

FORMAT = "medssl-release"
FORMAT_VERSION = 1


def sidecar_path(path: Union[str, Path]) -> Path:
    """``final.safetensors`` -> ``final.json``."""
    return Path(path).with_suffix(".json")


def is_release_sidecar(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a release sidecar (a JSON file whose ``format`` is ``medssl-release``)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > 64 * 2**20:
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def is_release_checkpoint(path: Union[str, Path]) -> bool:
    """Whether ``path`` is an existing release checkpoint (a .safetensors file whose sidecar says so)
    or a release sidecar."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path.exists() and is_release_sidecar(sidecar_path(path))
    return is_release_sidecar(path)


def check_release_outputs(option: str, outputs: Any, inputs: Any, *, keep_releases: bool = True) -> None:
    """Refuse to write ``outputs`` when one is an input or (``keep_releases``) an existing release checkpoint.

    Raises :class:`~medssl.errors.ConfigError` naming ``option``.
    """
    from .errors import ConfigError
    from .io.outputs import check_output_not_input

    outputs = [Path(p) for p in outputs]
    for out in outputs:
        if out.is_dir():
            raise ConfigError(option, f"{out} is a folder; give the file to write")
    check_output_not_input(option, outputs, inputs)
    if keep_releases:
        for out in outputs:
            if is_release_checkpoint(out):
                raise ConfigError(option, f"{out} is a release checkpoint (or its sidecar); an export never "
                                  "replaces one: write to another path")


def git_hash() -> Optional[str]:
    """The commit of the medssl source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _plain_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A state dict safetensors can store: contiguous CPU tensors, shared storage copied."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def _atomic_write_bytes(path: Path, write: Any) -> None:
    """``write(tmp)`` to a temporary path, then move it onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_release(path: Union[str, Path], method: nn.Module, cfg: Any, data_meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar.

    ``cfg``: the resolved run config (a :class:`~medssl.config.RunConfig` or its
    dict form); ``data_meta``: spacing, normalisation, patch size (from the cache).
    """
    from safetensors.torch import save_file

    from . import __version__
    from .config import config_to_dict

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path: a release checkpoint ends in .safetensors, got {path}")
    cfg_dict = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    encoder = getattr(method, "encoder", None)
    if encoder is None:
        raise ValueError("method: has no `encoder` attribute")
    prefix = getattr(method, "encoder_prefix", "encoder.")
    state = _plain_state(method)
    enc_keys = sorted(k for k in state if k.startswith(prefix))
    if not enc_keys:
        raise ValueError(f"method: no state-dict key starts with the encoder prefix '{prefix}'")
    bb = dict(cfg_dict.get("backbone", {}))
    if hasattr(encoder, "release_kwargs"):  # a backbone built from a file (an nnU-Net plans file) records what
        bb = {"name": bb.get("name"), **encoder.release_kwargs()}  # rebuilds it without that file
    dm = dict(data_meta or {})
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "method": cfg_dict.get("method", {}).get("name"),
        "backbone": {"name": bb.pop("name", None), "kwargs": bb},
        "spatial_dims": getattr(encoder, "spatial_dims", dm.get("spatial_dims")),
        "in_channels": getattr(encoder, "in_channels", dm.get("in_channels")),
        "embed_dim": getattr(encoder, "embed_dim", None),
        "spacing": dm.get("spacing"), "normalisation": dm.get("normalisation"), "patch_size": dm.get("patch_size"),
        "data": {k: v for k, v in dm.items() if k not in ("spacing", "normalisation", "patch_size")},
        "encoder_prefix": prefix, "encoder_keys": enc_keys,
        "medssl_version": __version__, "git_hash": git_hash(), "config": cfg_dict,
    }
    both = getattr(encoder, "spatial_dims_supported", None) or getattr(encoder, "paths", None)
    if both and len(set(both)) > 1:  # one set of weights for 2D and 3D input (medssl.eval.inputs)
        meta["spatial_dims_supported"] = sorted(int(d) for d in set(both))
    text = json.dumps(meta, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    _atomic_write_bytes(sidecar_path(path), lambda tmp: tmp.write_text(text))
    return path


def load_release(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, meta)`` of a release checkpoint (tensors on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not side.is_file():
        raise CheckpointError(f"{path}: its metadata sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{side}: not a medssl release sidecar (format '{FORMAT}')")
    _check_sidecar(side, meta)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    missing = [k for k in meta.get("encoder_keys", []) if k not in state]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} encoder keys listed in the sidecar are absent (first: {missing[0]})")
    return state, meta


def _check_sidecar(side: Path, meta: Mapping[str, Any]) -> None:
    """The sidecar fields loading relies on, with their types; a :class:`CheckpointError` naming the field."""
    problems = []
    if not isinstance(meta.get("encoder_prefix"), str):
        problems.append("'encoder_prefix' (a string) is missing")
    keys = meta.get("encoder_keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        problems.append("'encoder_keys' (a list of strings) is missing")
    elif isinstance(meta.get("encoder_prefix"), str) and not all(k.startswith(meta["encoder_prefix"]) for k in keys):
        problems.append("'encoder_keys' holds keys without the encoder prefix")
    bb = meta.get("backbone")
    if not isinstance(bb, dict) or not isinstance(bb.get("kwargs", {}), dict):
        problems.append("'backbone' must be {\"name\": ..., \"kwargs\": {...}}")
    if problems:
        raise CheckpointError(f"{side}: damaged release sidecar: " + "; ".join(problems))


def _check_claims(side: Path, meta: Mapping[str, Any], backbone: nn.Module) -> None:
    """What the sidecar says about its inputs (``spatial_dims``, ``in_channels``) must be what the backbone takes.

    The values callers compare with (``expect``) come from the sidecar, so a
    sidecar that lies about them would pass every check and fail (or, worse,
    run) on the wrong input; a :class:`CheckpointError` naming the key.
    """
    problems = []
    dims = getattr(backbone, "spatial_dims", None)
    both = getattr(backbone, "spatial_dims_supported", None) or getattr(backbone, "paths", None)
    claimed = meta.get("spatial_dims")
    if claimed is not None and dims is not None:
        allowed = {int(dims), *(int(d) for d in both)} if both else {int(dims)}
        if not isinstance(claimed, int) or isinstance(claimed, bool) or claimed not in allowed:
            problems.append(f"'spatial_dims' is {claimed!r}, the backbone it describes takes {sorted(allowed)}")
    claimed = meta.get("in_channels")
    have = getattr(backbone, "in_channels", None)
    if claimed is not None and have is not None and claimed != have:
        problems.append(f"'in_channels' is {claimed!r}, the backbone it describes takes {have}")
    if problems:
        raise CheckpointError(f"{side}: the sidecar does not describe its weights: " + "; ".join(problems))


def _check_expect(path: Path, meta: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    problems = []
    for key, want in expect.items():
        if key not in meta:
            problems.append(f"{key}: the checkpoint does not record it (expected {want!r})")
            continue
        have = meta[key]
        if isinstance(want, float) or (isinstance(want, (list, tuple)) and want and isinstance(want[0], float)):
            w = list(want) if isinstance(want, (list, tuple)) else [want]
            h = list(have) if isinstance(have, (list, tuple)) else [have]
            ok = len(w) == len(h) and all(abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a))) for a, b in zip(w, h))
        else:
            ok = (list(have) if isinstance(have, tuple) else have) == (list(want) if isinstance(want, tuple) else want)
        if not ok:
            problems.append(f"{key}: checkpoint has {have!r}, expected {want!r}")
    if problems:
        raise CheckpointError(f"{path}: does not fit: " + "; ".join(problems))


def load_encoder(path: Union[str, Path], *, expect: Optional[Mapping[str, Any]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the backbone (``BACKBONES``) from the sidecar and load the encoder weights strictly.

    ``expect``: sidecar values the caller needs, e.g.
    ``{"spatial_dims": 3, "in_channels": 1, "spacing": [1.5, 1.5, 1.5]}``.
    """
    from .registry import BACKBONES

    state, meta = load_release(path)
    if expect:
        _check_expect(Path(path), meta, expect)
    bb = meta.get("backbone") or {}
    if not bb.get("name"):
        raise CheckpointError(f"{path}: the sidecar names no backbone")
    try:
        backbone = BACKBONES.build(bb["name"], **bb.get("kwargs", {}))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot rebuild backbone '{bb['name']}' ({exc})") from None
    _check_claims(sidecar_path(path), meta, backbone)
    prefix = meta["encoder_prefix"]
    enc = {k[len(prefix):]: state[k] for k in meta["encoder_keys"]}
    own = backbone.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in enc.items() if k in own and own[k].shape != v.shape]
    if shapes:
        raise CheckpointError(f"{path}: encoder weights do not fit backbone '{bb['name']}' (shape checkpoint vs backbone: {shapes[:3]})")
    result = backbone.load_state_dict(enc, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: encoder weights do not fit backbone '{bb['name']}' "
            f"(missing: {result.missing_keys[:5]}, unexpected: {result.unexpected_keys[:5]})"
        )
    return backbone, meta


def export(path: Union[str, Path], *, to: str = "state-dict", out: Union[str, Path]) -> Path:
    """Write the encoder as a plain state dict.

    ``to="state-dict"``: the backbone's own keys; ``to="monai"``: the keys of
    the matching MONAI network (``backbone.monai_state_dict()``), with its
    class and arguments (``backbone.monai_spec()``) in ``OUT.json``. ``out``
    ending in ``.safetensors`` is written with safetensors, otherwise with
    ``torch.save`` of tensors only (readable with ``torch.load(weights_only=True)``).
    """
    if to not in ("monai", "state-dict"):
        raise ValueError(f"to: expected 'monai' or 'state-dict', got {to!r}")
    out = Path(out)
    info_path = out.with_name(out.name + ".json")
    # before anything is read: an export must never replace its own input or another release
    check_release_outputs("--out", [out, info_path], [path, sidecar_path(path)])
    backbone, meta = load_encoder(path)
    if to == "monai":
        if not (hasattr(backbone, "monai_state_dict") and hasattr(backbone, "monai_spec")):
            raise CheckpointError(f"{path}: backbone '{meta['backbone']['name']}' has no MONAI counterpart; use --to state-dict")
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.monai_state_dict().items()}
        spec = backbone.monai_spec()
    else:
        sd = _plain_state(backbone)
        spec = {"backbone": meta["backbone"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        _atomic_write_bytes(out, lambda tmp: save_file(sd, str(tmp)))
    else:
        _atomic_write_bytes(out, lambda tmp: torch.save(sd, tmp))
    info = {"source": str(path), "to": to, **spec, "spatial_dims": meta.get("spatial_dims"), "in_channels": meta.get("in_channels"), "spacing": meta.get("spacing"), "normalisation": meta.get("normalisation")}
    _atomic_write_bytes(info_path, lambda tmp: tmp.write_text(json.dumps(info, indent=2, default=str)))
    return out
