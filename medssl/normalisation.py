"""Input intensity scalings: what the cache stores, what each method pretrained on, and how to go between them.

A normalisation spec is a small JSON-able dict with a ``kind`` (one
canonical name each; older names are read as aliases, so existing
checkpoints load):

| kind | fields | model value from HU | used by |
|---|---|---|---|
| ``ct_window`` | ``window: [lo, hi]`` | ``(clip(hu, lo, hi) - lo) / (hi - lo)`` | the cache (``medssl preprocess``), baselines reading cache patches |
| ``hu_scale`` (alias ``ct_hu_scale``) | ``divisor`` | ``hu / divisor`` | UniMiSS / UniMiSS+ (HU / 1024; Xie et al., ECCV 2022; TPAMI 2024) |
| ``hu_clip_scale`` | ``window, offset, divisor, shift`` | ``(clip(hu, lo, hi) + offset) / divisor + shift`` | DrasCLR ([-1024, 240], (HU + 1024) / 632 - 1; Yu et al., MICCAI 2022) |
| ``nnunet_ct`` | ``window, mean, std`` | ``(clip(hu, lo, hi) - mean) / max(std, 1e-8)`` | nnU-Net's ``CTNormalization``: the 0.5 / 99.5 foreground percentiles, mean and std of the dataset fingerprint (:func:`resolve`) |
| ``minmax`` | ``min, max`` (per image) | not HU: each image scaled to [0, 1] | X-rays (cache and UniMiSS's 2D path) |
| ``zscore`` | ``mean, std`` (per image) | not HU: foreground z-score | MR volumes |

The four CT kinds are maps of Hounsfield units: :func:`to_hu` undoes one,
:func:`from_hu` applies one, :func:`convert` goes from the cache's spec to a
model's. ``minmax`` and ``zscore`` are per-image scalings that a cache and a
model either share (nothing to do) or cannot be converted into each other.
A spec may carry per-modality sub-specs (UniMiSS records its X-ray scaling
under ``"xray"``); :func:`for_modality` picks the one that applies.

All functions take numpy arrays (float32 out) or torch tensors (dtype kept).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

Spec = Dict[str, Any]

#: Canonical kind -> the fields it needs.
KINDS: Dict[str, tuple] = {
    "ct_window": ("window",),
    "hu_scale": ("divisor",),
    "hu_clip_scale": ("window", "offset", "divisor", "shift"),
    "nnunet_ct": ("window", "mean", "std"),
    "minmax": (),
    "zscore": (),
}
#: Older names still found in sidecars -> canonical kind.
ALIASES: Dict[str, str] = {"ct_hu_scale": "hu_scale"}
#: Kinds that are a map of Hounsfield units.
HU_KINDS = ("ct_window", "hu_scale", "hu_clip_scale", "nnunet_ct")
#: nnU-Net's floor on the standard deviation (``CTNormalization``, float32 targets).
NNUNET_STD_EPS = 1e-8
#: Kinds that scale every image by its own statistics (the cache and the model agree or cannot be converted).
PER_IMAGE_KINDS = ("minmax", "zscore")
#: The modality names a spec may hold sub-specs for.
MODALITY_KEYS = ("xray", "ct", "mr")


def canonical_kind(kind: Any) -> str:
    """``"ct_hu_scale"`` -> ``"hu_scale"``; an unknown kind is a ValueError naming ``spec``."""
    k = ALIASES.get(str(kind), str(kind))
    if k not in KINDS:
        raise ValueError(f"spec: unknown normalisation kind {kind!r} (known: {', '.join(sorted(KINDS) + sorted(ALIASES))})")
    return k


def make_spec(kind: str, **fields: Any) -> Spec:
    """A checked spec ``{"kind": kind, **fields}`` (``kind`` may be an alias and is kept as given)."""
    spec = {"kind": kind, **fields}
    check(spec)
    return spec


def check(spec: Mapping[str, Any]) -> str:
    """Validate ``spec``; returns its canonical kind. Raises ValueError naming the missing field."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"spec: a normalisation spec is a dict with a 'kind', got {spec!r}")
    kind = canonical_kind(spec["kind"])
    missing = [f for f in KINDS[kind] if f not in spec]
    if missing:
        raise ValueError(f"spec: kind '{spec['kind']}' needs {', '.join(missing)}")
    if "window" in KINDS[kind]:
        lo, hi = (float(v) for v in spec["window"])
        if not hi > lo:
            raise ValueError(f"spec: window needs lo < hi, got {spec['window']}")
    if kind in ("hu_scale", "hu_clip_scale") and float(spec["divisor"]) == 0:
        raise ValueError("spec: divisor must not be 0")
    if kind == "nnunet_ct" and not float(spec["std"]) >= 0:
        raise ValueError(f"spec: std must be >= 0, got {spec['std']}")
    return kind


def resolve(spec: Optional[Mapping[str, Any]]) -> Optional[Spec]:
    """``spec`` with file references filled in: ``{kind: nnunet_ct, plans: PATH}`` (or ``fingerprint: PATH``,
    an nnU-Net ``dataset_fingerprint.json``; ``channel`` defaults to 0) gets ``window``, ``mean`` and ``std``
    from the file's foreground intensity statistics, exactly the numbers nnU-Net's ``CTNormalization``
    uses. Numbers given in the spec are kept; other specs come back unchanged."""
    if not spec or canonical_kind(spec.get("kind")) != "nnunet_ct":
        return None if spec is None else dict(spec)
    out = {k: v for k, v in spec.items() if v is not None}  # a null field (a config override) is an unset one
    refs = [k for k in ("plans", "fingerprint") if out.get(k)]
    if len(refs) > 1:
        raise ValueError("spec: give one of 'plans' and 'fingerprint', not both")
    if not refs and not all(k in out for k in ("window", "mean", "std")):
        raise ValueError("spec: nnunet_ct needs window, mean and std, or plans: (or fingerprint:) a file holding "
                         "nnU-Net's foreground intensity statistics")
    if refs and not all(k in out for k in ("window", "mean", "std")):
        from .io.nnunet_plans import ct_statistics

        stats = ct_statistics(out[refs[0]], int(out.get("channel", 0)))
        out.setdefault("window", [stats["percentile_00_5"], stats["percentile_99_5"]])
        out.setdefault("mean", stats["mean"])
        out.setdefault("std", stats["std"])
    return out


def for_modality(spec: Optional[Mapping[str, Any]], modality: str) -> Optional[Spec]:
    """The part of ``spec`` for ``modality`` (``"ct"``, ``"mr"`` or ``"xray"``): a sub-spec when one is recorded."""
    if not spec:
        return None
    sub = spec.get(modality)
    if isinstance(sub, Mapping) and "kind" in sub:
        return dict(sub)
    return {k: v for k, v in spec.items() if k not in MODALITY_KEYS or not isinstance(v, Mapping)}


def _clip(x: Any, lo: float, hi: float) -> Any:
    return x.clamp(lo, hi) if hasattr(x, "clamp") else np.clip(x, lo, hi)


def _array(x: Any) -> Any:
    return x if hasattr(x, "clamp") else np.asarray(x, dtype=np.float32)


def _out(x: Any) -> Any:
    return x if hasattr(x, "clamp") else np.asarray(x, dtype=np.float32)


def to_hu(x: Any, cache_spec: Mapping[str, Any]) -> Any:
    """Values scaled by ``cache_spec`` (a HU kind) -> Hounsfield units.

    Values that were clipped come back as the window edge.
    """
    kind = check(cache_spec)
    x = _array(x)
    if kind == "ct_window":
        lo, hi = (float(v) for v in cache_spec["window"])
        return _out(lo + x * (hi - lo))
    if kind == "hu_scale":
        return _out(x * float(cache_spec["divisor"]))
    if kind == "hu_clip_scale":
        return _out((x - float(cache_spec["shift"])) * float(cache_spec["divisor"]) - float(cache_spec["offset"]))
    if kind == "nnunet_ct":
        return _out(x * max(float(cache_spec["std"]), NNUNET_STD_EPS) + float(cache_spec["mean"]))
    raise ValueError(f"cache_spec: kind '{cache_spec['kind']}' is not a map of Hounsfield units")


def from_hu(hu: Any, model_spec: Mapping[str, Any]) -> Any:
    """Hounsfield units -> the values of ``model_spec`` (a HU kind)."""
    kind = check(model_spec)
    hu = _array(hu)
    if kind == "ct_window":
        lo, hi = (float(v) for v in model_spec["window"])
        return _out((_clip(hu, lo, hi) - lo) / (hi - lo))
    if kind == "hu_scale":
        return _out(hu / float(model_spec["divisor"]))
    if kind == "hu_clip_scale":
        lo, hi = (float(v) for v in model_spec["window"])
        return _out((_clip(hu, lo, hi) + float(model_spec["offset"])) / float(model_spec["divisor"]) + float(model_spec["shift"]))
    if kind == "nnunet_ct":
        lo, hi = (float(v) for v in model_spec["window"])
        return _out((_clip(hu, lo, hi) - float(model_spec["mean"])) / max(float(model_spec["std"]), NNUNET_STD_EPS))
    raise ValueError(f"model_spec: kind '{model_spec['kind']}' is not a map of Hounsfield units")


def same(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> bool:
    """Whether two specs scale alike (kinds by canonical name; fields compared as numbers)."""
    if not a or not b:
        return not a and not b
    ka, kb = check(a), check(b)
    if ka != kb:
        return False
    if ka in PER_IMAGE_KINDS:
        return True
    for f in KINDS[ka]:
        va, vb = np.atleast_1d(np.asarray(a[f], dtype=np.float64)), np.atleast_1d(np.asarray(b[f], dtype=np.float64))
        if va.shape != vb.shape or not np.allclose(va, vb, rtol=1e-9, atol=0.0):
            return False
    return True


def needs_conversion(cache_spec: Optional[Mapping[str, Any]], model_spec: Optional[Mapping[str, Any]]) -> bool:
    """False when the model reads cache values as they are (no model spec, or the same scaling)."""
    if not model_spec:
        return False
    if not cache_spec:
        raise ValueError(f"cache_spec: the data records no normalisation; cannot feed a model pretrained on {describe(model_spec)}")
    mk, ck = check(model_spec), check(cache_spec)
    if mk in PER_IMAGE_KINDS or ck in PER_IMAGE_KINDS:
        if mk != ck:
            raise ValueError(f"model_spec: cannot convert {describe(cache_spec)} values into {describe(model_spec)}")
        return False
    return not same(cache_spec, model_spec)


def convert(x: Any, cache_spec: Optional[Mapping[str, Any]], model_spec: Optional[Mapping[str, Any]]) -> Any:
    """Cache values ``x`` (scaled by ``cache_spec``) -> the input range of a model pretrained on ``model_spec``.

    ``model_spec`` None, or equal to ``cache_spec``, or both per-image kinds of
    one name: ``x`` unchanged. Otherwise ``from_hu(to_hu(x, cache_spec), model_spec)``.
    """
    if not needs_conversion(cache_spec, model_spec):
        return x
    return from_hu(to_hu(x, cache_spec), model_spec)  # type: ignore[arg-type]


def describe(spec: Optional[Mapping[str, Any]]) -> str:
    """One line for tables and errors, e.g. ``HU / 1024 (hu_scale)``."""
    if not spec:
        return "cache values as stored"
    kind = check(spec)
    if kind == "ct_window":
        lo, hi = (float(v) for v in spec["window"])
        return f"HU window [{lo:g}, {hi:g}] -> [0, 1] (ct_window)"
    if kind == "hu_scale":
        return f"HU / {float(spec['divisor']):g} (hu_scale)"
    if kind == "hu_clip_scale":
        lo, hi = (float(v) for v in spec["window"])
        off, div, sh = float(spec["offset"]), float(spec["divisor"]), float(spec["shift"])
        return f"HU clipped to [{lo:g}, {hi:g}], (HU + {off:g}) / {div:g} {'+' if sh >= 0 else '-'} {abs(sh):g} (hu_clip_scale)"
    if kind == "nnunet_ct":
        lo, hi = (float(v) for v in spec["window"])
        return f"HU clipped to [{lo:g}, {hi:g}], (HU - {float(spec['mean']):g}) / {float(spec['std']):g} (nnunet_ct)"
    return f"per-image {kind}"
