"""From a checked :class:`~medssl.config.RunConfig` to objects: method, data source, cache.

The only place in the trainer that maps configured names to constructors
(through the registries).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import BACKBONES, METHODS, SOURCES

__all__ = ["build_method", "needs_cache", "cache_path", "ensure_cache", "check_cache", "build_source", "data_meta",
           "check_view_sizes"]

#: Method attributes holding the size of a crop cut from each data item (the data source's patch).
VIEW_SIZE_ATTRS = ("view_size", "global_size", "local_size")


def build_method(cfg: Any) -> Any:
    """``BACKBONES.build(backbone.name, **backbone.kwargs)`` wrapped by ``METHODS.build(method.name, backbone=..., **method.kwargs)``."""
    if "backbone" in cfg.method.kwargs:
        raise ConfigError("method.backbone", "is set by the trainer from the backbone section")
    backbone = BACKBONES.build(cfg.backbone.name, **cfg.backbone.kwargs)
    return METHODS.build(cfg.method.name, backbone=backbone, **cfg.method.kwargs)


def needs_cache(cfg: Any) -> bool:
    """True when the configured source reads a preprocessed cache (takes a ``cache`` argument not set in the config)."""
    params = inspect.signature(SOURCES.get(cfg.data.source)).parameters
    return "cache" in params and "cache" not in cfg.data.kwargs


def cache_path(cfg: Any) -> Path:
    """``data.cache``, or ``<manifest dir>/cache`` when unset."""
    if cfg.data.cache:
        return Path(cfg.data.cache)
    if not cfg.data.manifest:
        raise ConfigError("data.manifest", "is required (e.g. data.manifest=DIR/manifest.jsonl)")
    return Path(cfg.data.manifest).parent / "cache"


def ensure_cache(cfg: Any, *, log: Any = print) -> Path:
    """Preprocess ``data.manifest`` into the cache unless the cache already exists."""
    path = cache_path(cfg)
    if path.exists() and any(path.iterdir()):
        return path
    if not cfg.data.manifest:
        raise ConfigError("data.cache", f"{path} does not exist and no data.manifest is given to build it")
    manifest = Path(cfg.data.manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest file not found")
    try:
        from ..preprocess import preprocess_manifest
    except ImportError:  # pragma: no cover - the preprocessing package is not installed
        raise ConfigError("data.cache", f"{path} does not exist and preprocessing is unavailable") from None
    log(f"preprocessing {manifest} into {path} ...")
    preprocess_manifest(manifest, path)
    return path


def check_cache(cfg: Any, path: Path) -> Dict[str, Any]:
    """Refuse a cache built from another manifest, or one that lacks cases of its manifest.

    The manifest is ``data.manifest`` or, without it, the one the cache
    records (``inputs.json``). A partial cache (cases never processed, or
    skipped as bad) is used only with ``data.allow_partial_cache=true``.
    Returns what the run summary records about the cache.
    """
    try:
        from ..preprocess import Cache
        from ..preprocess.inputs import load_cases
        from ..preprocess.pipeline import check_same_manifest, manifest_record
    except ImportError:  # pragma: no cover
        return {"path": str(path)}
    from ..io.jsonfile import read_json

    path = Path(path)
    info: Dict[str, Any] = {"path": str(path)}
    rec_path = path / "inputs.json"
    rec = read_json(rec_path, hint="delete it and run `medssl preprocess` again") if rec_path.is_file() else None
    ids: Optional[list] = None
    manifest: Optional[str] = None
    if cfg.data.manifest:
        m = Path(cfg.data.manifest)
        if not m.is_file():
            raise DataError(m, "manifest file not found (data.manifest)")
        new = manifest_record(m, load_cases(m, check_files=False))
        manifest, ids = new["manifest"], new["ids"]
        if rec is not None:
            check_same_manifest(rec_path, rec, new, "data.manifest")
    elif rec is not None and isinstance(rec.get("ids"), list):
        manifest, ids = rec.get("manifest"), [str(i) for i in rec["ids"]]
    if ids is None:  # a cache from before inputs.json, without a manifest to compare with
        return info
    cache = Cache(path)
    have = set(cache.ids)
    missing = [i for i in ids if i not in have]
    bad = {s.get("id") for s in cache.skipped if isinstance(s, dict)}
    info.update(manifest=manifest, cases=len(ids) - len(missing), manifest_cases=len(ids), missing=len(missing),
                skipped_as_bad=sum(i in bad for i in missing), partial=bool(missing))
    if missing:
        if not cfg.data.allow_partial_cache:
            n_bad = info["skipped_as_bad"]
            why = f"{n_bad} of them skipped as bad (listed in {path / 'skipped.json'}), " if n_bad else ""
            raise ConfigError("data.cache", f"{path} holds {info['cases']} of the {len(ids)} cases of {manifest} "
                              f"({len(missing)} missing, first {missing[:3]}; {why}{len(missing) - n_bad} never "
                              f"processed); complete it with `medssl preprocess {manifest} --out {path}`, or set "
                              "data.allow_partial_cache=true to pretrain on the cases it has")
        info["allowed_partial"] = True
    return info


def _open_cache(path: Path) -> Any:
    try:
        from ..preprocess import Cache
    except ImportError:  # pragma: no cover
        return path
    return Cache(path)


def build_source(cfg: Any, cache: Optional[Path] = None) -> Any:
    """The data source ``SOURCES.build(data.source, cache=..., **data.kwargs)``."""
    kwargs: Dict[str, Any] = dict(cfg.data.kwargs)
    params = inspect.signature(SOURCES.get(cfg.data.source)).parameters
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = cfg.seed  # the run's seed also seeds the source's own crops
    if "report_manifest" in params and not kwargs.get("report_manifest") and cfg.data.manifest:
        kwargs["report_manifest"] = str(cfg.data.manifest)  # reports come from the run's manifest, wherever the cache is
    if needs_cache(cfg):
        kwargs["cache"] = _open_cache(cache if cache is not None else cache_path(cfg))
    try:
        return SOURCES.build(cfg.data.source, **kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError) or isinstance(exc, DataError):
            raise
        raise ConfigError(f"data.source={cfg.data.source}", str(exc)) from None


def check_view_sizes(method: Any, source: Any) -> None:
    """Refuse a method whose crops are larger than the patches the source gives (a :class:`ConfigError`).

    A random-resized crop of a view larger than its patch would upsample
    the patch instead of cropping it, silently changing the scale the
    encoder learns at. Compared axis by axis where both have as many axes.
    """
    patch = getattr(source, "patch_size", None) or getattr(source, "size", None)
    if not isinstance(patch, (tuple, list)) or not patch:
        return
    patch = tuple(int(v) for v in patch)
    for attr in VIEW_SIZE_ATTRS:
        view = getattr(method, attr, None)
        if view is None or isinstance(view, bool):
            continue
        view = (int(view),) * len(patch) if isinstance(view, (int, np.integer)) else tuple(int(v) for v in view)
        if len(view) == len(patch) and any(v > p for v, p in zip(view, patch)):
            name = "data.patch_size" if hasattr(source, "patch_size") else "data.size"
            raise ConfigError(f"method.{attr}", f"{list(view)} is larger than the data patch {list(patch)} ({name}): "
                              f"a crop cannot be larger than the patch it is cut from; make method.{attr} at most "
                              f"{list(patch)} or {name} larger")


def data_meta(source: Any) -> Dict[str, Any]:
    """What the release checkpoint records about the data: spacing, normalisation, patch size, channels.

    From ``source.data_meta()`` when the source has it; otherwise from the
    source's cache (``plan.json``: target spacing; the first case's
    ``meta.json``: intensity normalisation and modality) and the source's
    ``patch_size`` / ``size`` and ``spacing`` / ``normalisation`` attributes.
    """
    if hasattr(source, "data_meta"):
        return dict(source.data_meta())
    meta: Dict[str, Any] = {}
    cache = getattr(source, "cache", None)
    plan = getattr(cache, "plan", None)
    if isinstance(plan, dict) and plan.get("spacing") is not None:
        meta["spacing"] = list(plan["spacing"])
    ids = getattr(source, "ids", None)
    if cache is not None and hasattr(cache, "meta") and ids:
        case = cache.meta(ids[0])
        if "normalization" in case and getattr(source, "normalisation", None) is None:  # a source's own scaling wins
            meta["normalisation"] = case["normalization"]
        if "modality" in case:
            meta["modality"] = case["modality"]
    for key, attr in (("patch_size", "patch_size"), ("patch_size", "size"), ("spacing", "spacing"), ("normalisation", "normalisation"), ("in_channels", "in_channels")):
        val = getattr(source, attr, None)
        if val is not None and key not in meta:
            meta[key] = [int(v) if isinstance(v, (int, np.integer)) else v for v in val] if isinstance(val, (tuple, list)) else val
    return meta
