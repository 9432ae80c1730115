"""Small name -> constructor registries (backbones, methods, data layouts, ...).

Components register themselves with a decorator at import time; the config
layer is the only place that maps names to constructors::

    @BACKBONES.register("resnet3d")
    class ResNetEncoder(nn.Module): ...

    model = BACKBONES.build("resnet3d", spatial_dims=3)
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional

from .errors import ConfigError


class Registry:
    """A named mapping from strings to constructors.

    ``modules`` lists the modules whose import fills the registry; they are
    imported on first lookup so that importing :mod:`medssl` stays cheap.
    """

    def __init__(self, kind: str, modules: Iterable[str] = ()):
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}
        self._help: Dict[str, str] = {}
        self._modules = list(modules)
        self._loaded = False

    def register(self, name: str, help: Optional[str] = None) -> Callable:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            doc = help or (inspect.getdoc(obj) or "").split("\n")[0]
            self._help[name] = doc
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._modules:
                importlib.import_module(mod)

    def names(self) -> List[str]:
        self._load()
        return sorted(self._items)

    def describe(self) -> Dict[str, str]:
        self._load()
        return {k: self._help[k] for k in sorted(self._items)}

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"{self.kind}.name", f"unknown {self.kind} '{name}' (known: {known})")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def build(self, name: str, **kwargs: Any) -> Any:
        """Construct ``name`` with keyword arguments, naming any unknown argument."""
        ctor = self.get(name)
        check_kwargs(ctor, kwargs, prefix=f"{self.kind}.{name}")
        return ctor(**kwargs)


def check_kwargs(ctor: Callable[..., Any], kwargs: Dict[str, Any], prefix: str) -> None:
    """Raise :class:`ConfigError` for a keyword ``ctor`` does not accept."""
    try:
        sig = inspect.signature(ctor)
    except (TypeError, ValueError):  # builtins without a signature
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in kwargs:
        if key not in params:
            allowed = ", ".join(k for k in params if k != "self")
            raise ConfigError(f"{prefix}.{key}", f"unknown argument (accepted: {allowed})")


# The modules whose import fills each registry, listed explicitly (no package scanning).
BACKBONES = Registry(
    "backbone",
    modules=[
        "medssl.backbones.resnet",
        "medssl.backbones.unet_encoder",
        "medssl.backbones.swin",
        "medssl.backbones.vit",
        "medssl.backbones.cond_cnn3d",
        "medssl.backbones.mit",
        "medssl.backbones.mit_plus",
        "medssl.backbones.slice_encoder",
        "medssl.backbones.resenc_unet",
    ],
)
METHODS = Registry(
    "method",
    modules=[
        "medssl.methods.simclr",
        "medssl.methods.moco",
        "medssl.methods.dino",
        "medssl.methods.mae",
        "medssl.methods.mae_unet",
        "medssl.methods.drasclr",
        "medssl.methods.t3d",
        "medssl.methods.unimiss",
        "medssl.methods.unimiss_plus",
        "medssl.methods.iicc",
        "medssl.methods.iicc_baselines",
    ],
)
LAYOUTS = Registry("layout", modules=["medssl.io.layouts"])
SOURCES = Registry(
    "source",
    modules=[
        "medssl.data",
        "medssl.data.volume_slices_source",
        "medssl.data.report_source",
        "medssl.data.unimiss_source",
        "medssl.anatomy.patch_source",
        "medssl.drr.source",
    ],
)
#: The generic tasks (``medssl.eval``) and the method-specific ones, registered beside their method
#: (``medssl/methods/<family>_eval.py``); the evaluation reaches the latter only through this list.
TASKS = Registry("task", modules=["medssl.eval", "medssl.methods.unimiss_eval", "medssl.methods.t3d_eval",
                                  "medssl.methods.drasclr_eval"])
#: Method name -> the family's :class:`~medssl.methods.base.EvalAdapter` (what evaluation asks of its checkpoints).
EVAL_ADAPTERS = Registry("eval_adapter", modules=["medssl.methods.unimiss_eval"])


def eval_adapter(method: Optional[str]) -> Any:
    """The evaluation adapter registered for ``method``; the neutral :class:`~medssl.methods.base.EvalAdapter` otherwise."""
    if method and method in EVAL_ADAPTERS:
        return EVAL_ADAPTERS.get(method)
    from .methods.base import EvalAdapter

    return EvalAdapter()
