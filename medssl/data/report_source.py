"""Several native-resolution sub-volume crops per volume, with the volume's report embeddings (T3D).

Each item is one volume: ``crops_per_volume`` random crops of ``crop_size``
voxels from the cached array (the cache's spacing, no further resampling:
T3D never downsamples a whole volume to fit memory, Liu et al.,
arXiv:2312.01529) plus the embedding of the whole report (findings +
impression) and of each sentence, from a frozen text encoder.

Reports come from the manifest (``report`` file or ``report_text``); the
cache does not keep them. ``report_manifest`` defaults to
``manifest.jsonl`` next to the cache folder, which is where
``medssl pretrain`` builds the cache (``<manifest dir>/cache``). Every report
is parsed and embedded once, at construction, through the on-disk
:class:`~medssl.text.EmbeddingCache`; the source then holds only a table of
unique sentence embeddings (float16), so DataLoader workers never run the
text encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import DataError
from ..preprocess.cache import Cache
from ..registry import SOURCES
from .base import DTYPES, CacheSource, check_dtype, check_size, pad_to, random_start


def load_reports(manifest: Union[str, Path], ids: Sequence[str]) -> Dict[str, Optional[str]]:
    """``{id: report text or None}`` for ``ids`` from the manifest (a missing case is a :class:`DataError`)."""
    from ..preprocess.inputs import load_cases

    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest with the reports not found (set data.report_manifest)")
    cases = {str(c.id): c for c in load_cases(manifest, check_files=False)}
    missing = [i for i in ids if i not in cases]
    if missing:
        raise DataError(manifest, f"{len(missing)} cached cases are not in this manifest (first: {missing[0]})")
    out: Dict[str, Optional[str]] = {}
    for i in ids:
        try:
            out[i] = cases[i].read_report()
        except DataError as exc:
            raise DataError(exc.path or manifest, f"case '{i}': {exc.problem}") from None
    return out


@SOURCES.register("reports")
class ReportCropSource(CacheSource):
    """Volumes with ``K`` random crops each and their report's embeddings.

    Item ``i`` (volume ``i``) is a dict:
    ``image``: ``[K, 1, D, H, W]`` crops (float16 by default; zero-padded
    where the volume is smaller), ``starts``: ``[K, 3]`` crop corners (z, y, x),
    ``report_emb``: ``[Dt]`` float32, ``sentence_emb``: ``[S, Dt]`` float32 (the
    first ``max_sentences`` sentences, zero rows after), ``sentence_mask``:
    ``[S]`` bool, ``id``.

    Args:
        cache: the preprocessed cache.
        crop_size: crop size in voxels (z, y, x) at the cache's spacing.
        crops_per_volume: ``K``.
        report_manifest: manifest holding the reports (default: next to the cache).
        text_encoder: ``"default"`` (packaged all-MiniLM-L6-v2), a hub name or a folder.
        embedding_cache: folder of the embedding cache (default: ``<cache>/text_embeddings``).
        max_sentences: ``S``; longer reports keep their first ``S`` sentences.
        check_language: reject non-English reports (see :func:`medssl.text.language_check`).
        ids, split, modality, seed: which cases, and the seed of the crop positions.
        dtype: ``float16`` or ``float32`` crops.
    """

    def __init__(
        self,
        cache: Union[Cache, str, Path],
        *,
        crop_size: Sequence[int] = (96, 96, 96),
        crops_per_volume: int = 4,
        report_manifest: Optional[str] = None,
        text_encoder: str = "default",
        embedding_cache: Optional[str] = None,
        max_sentences: int = 32,
        check_language: bool = True,
        ids: Optional[Sequence[str]] = None,
        split: Optional[str] = None,
        modality: Optional[Union[str, Sequence[str]]] = ("ct", "mr"),
        seed: int = 0,
        dtype: str = "float16",
        encoder: Any = None,
    ) -> None:
        super().__init__(cache, ids=ids, split=split, modality=modality, seed=seed)
        self.patch_size = check_size("crop_size", crop_size, 3)  # recorded in the release checkpoint
        if int(crops_per_volume) < 1:
            raise ValueError(f"crops_per_volume: must be >= 1, got {crops_per_volume}")
        if int(max_sentences) < 1:
            raise ValueError(f"max_sentences: must be >= 1, got {max_sentences}")
        self.crops_per_volume, self.max_sentences = int(crops_per_volume), int(max_sentences)
        self.dtype = check_dtype(dtype)
        manifest = Path(report_manifest) if report_manifest else self.cache.path.parent / "manifest.jsonl"
        texts = load_reports(manifest, self.ids)
        self._embed_reports(texts, text_encoder, embedding_cache, check_language, encoder)

    def _embed_reports(self, texts: Dict[str, Optional[str]], name: str, folder: Optional[str], check_language: bool,
                       encoder: Any) -> None:
        from ..text import EmbeddingCache, TextEncoder, parse_report

        parsed = {i: parse_report(texts[i], case=i, check_language=check_language) for i in self.ids}
        enc = encoder if encoder is not None else TextEncoder(name)
        store = EmbeddingCache(folder or self.cache.path / "text_embeddings", enc)
        self.text_dim = int(enc.dim)
        self.encoder_name = enc.name
        sentences = list(dict.fromkeys(s for r in parsed.values() for s in r.sentences[: self.max_sentences]))
        self.sentence_table = store.embed(sentences).to(torch.float16)  # [U, Dt]
        index = {s: j for j, s in enumerate(sentences)}
        self.sentence_index: List[List[int]] = [[index[s] for s in parsed[i].sentences[: self.max_sentences]]
                                                for i in self.ids]
        self.report_texts = [parsed[i].text for i in self.ids]
        self.report_table = store.embed(self.report_texts).to(torch.float32)  # [N, Dt]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int) -> Dict[str, Any]:
        epoch, index = self._split_key(key)
        case_id = self.ids[index]
        rng = self.rng(epoch, index)
        vol = self.cache.image(case_id)  # (Z, Y, X) memmap at the cache's spacing
        np_dtype, _ = DTYPES[self.dtype]
        crops, starts = [], []
        for _ in range(self.crops_per_volume):
            start = random_start(rng, vol.shape, self.patch_size)
            box = tuple(slice(s, s + n) for s, n in zip(start, self.patch_size))
            crops.append(pad_to(np.array(vol[box], dtype=np_dtype, order="C"), self.patch_size))
            starts.append(start)
        s = self.sentence_index[index]
        sent = torch.zeros(self.max_sentences, self.text_dim)
        sent[: len(s)] = self.sentence_table[s].float()
        mask = torch.zeros(self.max_sentences, dtype=torch.bool)
        mask[: len(s)] = True
        return {
            "image": torch.from_numpy(np.stack(crops)[:, None]),  # [K, 1, D, H, W]
            "starts": torch.tensor(starts, dtype=torch.int64),  # [K, 3]
            "report_emb": self.report_table[index].clone(),  # [Dt]
            "sentence_emb": sent,  # [S, Dt]
            "sentence_mask": mask,  # [S]
            "id": case_id,
        }

    def data_meta(self) -> Dict[str, Any]:
        """What the release checkpoint records: spacing, normalisation, crop size, text encoder."""
        meta: Dict[str, Any] = {"patch_size": list(self.patch_size), "in_channels": 1,
                                "text_encoder": self.encoder_name, "text_dim": self.text_dim,
                                "crops_per_volume": self.crops_per_volume}
        if isinstance(self.cache.plan, dict) and self.cache.plan.get("spacing") is not None:
            meta["spacing"] = list(self.cache.plan["spacing"])
        case = self.cache.meta(self.ids[0])
        for src, dst in (("normalization", "normalisation"), ("modality", "modality")):
            if src in case:
                meta[dst] = case[src]
        return meta
