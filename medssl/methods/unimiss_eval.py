"""What UniMiSS and UniMiSS+ tell the generic evaluation about their checkpoints (:class:`~medssl.methods.base.EvalAdapter`)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from ..registry import EVAL_ADAPTERS
from .base import EvalAdapter


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
