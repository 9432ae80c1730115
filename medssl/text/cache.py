"""On-disk cache of text embeddings, keyed by ``sha256(text)`` and the encoder id.

Layout: ``<root>/<encoder_id>/<aa>/<sha256>.npy`` (one float32 ``[dim]``
vector per text; ``aa`` = the first two hex digits, to keep folders small)
and ``<root>/<encoder_id>/encoder.json`` (name and dimension). Only ``.npy``
(read with ``allow_pickle=False``) and JSON are written: nothing is ever
unpickled. Writes are atomic (temporary file + rename), so several
processes may fill one cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from ..io.atomic import save_npy_atomic, write_text_atomic
import torch

from ..errors import DataError
from .encoder import TextEncoder


def text_key(text: str) -> str:
    """``sha256`` hex digest of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embed texts with ``encoder``, reading and writing ``root`` so each text is embedded once per encoder.

    ``hits`` and ``misses`` count lookups since construction.
    """

    def __init__(self, root: Union[str, Path], encoder: TextEncoder) -> None:
        self.encoder = encoder
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", encoder.encoder_id)
        self.dir = Path(root) / safe
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.is_file():
            write_text_atomic(info, json.dumps({"name": encoder.name, "id": encoder.encoder_id, "dim": encoder.dim}))
        self.hits = 0
        self.misses = 0
        self._memory: Dict[str, np.ndarray] = {}

    def path(self, text: str) -> Path:
        k = text_key(text)
        return self.dir / k[:2] / f"{k}.npy"

    def _read(self, p: Path) -> np.ndarray:
        try:
            v = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(p, f"unreadable cached embedding ({exc}); delete the file to recompute it") from None
        if v.shape != (self.encoder.dim,):
            raise DataError(p, f"cached embedding has shape {v.shape}, expected ({self.encoder.dim},); delete it to recompute")
        return v

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, dim]`` float32 embeddings of ``texts`` (cached ones read, the rest embedded and stored)."""
        out: List[np.ndarray | None] = []
        todo: List[int] = []
        for i, t in enumerate(texts):
            k = text_key(t)
            if k in self._memory:
                out.append(self._memory[k])
                self.hits += 1
                continue
            p = self.path(t)
            if p.is_file():
                out.append(self._read(p))
                self._memory[k] = out[-1]  # type: ignore[assignment]
                self.hits += 1
            else:
                out.append(None)
                todo.append(i)
                self.misses += 1
        if todo:
            unique = list(dict.fromkeys(texts[i] for i in todo))
            vecs = self.encoder.embed(unique).numpy().astype(np.float32)
            fresh = dict(zip(unique, vecs))
            for t, v in fresh.items():
                save_npy_atomic(self.path(t), v)
                self._memory[text_key(t)] = v
            for i in todo:
                out[i] = fresh[texts[i]]
        if not out:
            return torch.zeros(0, self.encoder.dim)
        return torch.from_numpy(np.stack(out))  # type: ignore[arg-type]
