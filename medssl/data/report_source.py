"""Several native-resolution sub-volume crops per volume, with the volume's report embeddings (T3D).

Each item is one volume: ``crops_per_volume`` random crops of ``crop_size``
voxels from the cached array (the cache's spacing, no further resampling:
T3D never downsamples a whole volume to fit memory, Liu et al.,
arXiv:2312.01529) plus the embedding of the whole report (findings +
impression) and of each sentence, from a frozen text encoder.

Reports come from the manifest (``report`` file or ``report_text``); the
cache does not keep them. ``report_manifest`` is the run's ``data.manifest``
when ``medssl pretrain`` builds the source (:func:`medssl.train.build.build_source`),
else ``manifest.jsonl`` next to the cache folder, which is where
``medssl pretrain`` builds the cache (``<manifest dir>/cache``).

Only the train split's reports, by default (``report_split="train"``): the
evaluation's ``report_retrieval`` and ``zero_shot`` score (volume, report)
pairs of the test split, so pretraining on those reports would score pairs the
model was trained to match. The split is the evaluation's own: both select
the cases and split them through :mod:`medssl.splits` (:func:`eval_split`,
rule ``report_split_rule`` with ``report_train_share``), so the two cannot
disagree; cases the evaluation never scores (``split: unpaired``, or no
``split`` value under rule ``manifest``) are kept. ``report_split="all"`` reads every report and warns. The choice is
recorded in the checkpoint sidecar (``data.report_split`` and friends), and the
evaluation flags its rows with ``pairs_seen_in_pretraining``. Every report
is parsed and embedded once, at construction, through the on-disk
:class:`~medssl.text.EmbeddingCache`; the source then holds only a table of
unique sentence embeddings (float16), so DataLoader workers never run the
text encoder.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DataError
from ..preprocess.cache import Cache
from ..registry import SOURCES
from ..splits import describe_split_rule, evaluated_cases, split_cases
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


REPORT_SPLITS = ("train", "all")


def eval_split(manifest: Union[str, Path], cache: Union[Cache, str, Path], *, rule: str = "hash",
               train_share: float = 0.75) -> Tuple[List[str], List[str]]:
    """``(train_ids, test_ids)`` of the volumes of ``manifest``, exactly as ``medssl evaluate`` splits them.

    The evaluation of a 3D checkpoint on ``manifest`` and ``cache`` takes the
    cases :func:`medssl.splits.evaluated_cases` selects (each one in the
    cache) and splits them with :func:`medssl.splits.split_cases`
    (ids, manifest ``split`` values, patient groups) under ``rule`` and
    ``train_share``; so does this. A cohort too small to evaluate (fewer than
    2 train or test cases) still gets its split, holding out its test cases.
    """
    from ..preprocess.inputs import load_cases

    manifest = Path(manifest)
    try:
        if not manifest.is_file():
            raise DataError(manifest, "manifest not found")
        records = load_cases(manifest, check_files=False)
        c = cache if isinstance(cache, Cache) else Cache(cache)
        cases, _ = evaluated_cases(records, 3, strict=True, source=manifest, cache=c)
    except DataError as exc:
        raise DataError(exc.path, f"{exc.problem}; the train split of the reports is the evaluation's split of this "
                                  "manifest and cache (set data.report_manifest to the manifest you will evaluate on, "
                                  "or data.report_split=all)") from None
    return split_cases(cases, rule=rule, train_share=train_share)


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
        report_manifest: manifest holding the reports (default: next to the cache; ``medssl pretrain`` passes
            ``data.manifest``).
        report_split: ``"train"`` (default): only cases outside the evaluation's test split (see
            :func:`eval_split`); ``"all"``: every report (retrieval and zero-shot then score pairs seen in pretraining).
        report_split_rule, report_train_share: the evaluation split those reports are kept out of
            (``medssl evaluate --split-rule``, ``EvalSettings.train_share``).
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
        report_split: str = "train",
        report_split_rule: str = "hash",
        report_train_share: float = 0.75,
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
        if report_split not in REPORT_SPLITS:
            raise ValueError(f"report_split: expected one of {', '.join(REPORT_SPLITS)}, got {report_split!r}")
        describe_split_rule(report_split_rule)  # validates the rule's name
        if not 0 < float(report_train_share) < 1:
            raise ValueError(f"report_train_share: must lie in (0, 1), got {report_train_share}")
        manifest = Path(report_manifest) if report_manifest else self.cache.path.parent / "manifest.jsonl"
        if not manifest.is_file():
            raise DataError(manifest, "manifest with the reports not found (set data.report_manifest)")
        self.report_split, self.report_split_rule = str(report_split), str(report_split_rule)
        self.report_train_share = float(report_train_share)
        self.held_out: List[str] = []  # cached cases left out because the evaluation tests on them
        if self.report_split == "train":
            _, test = eval_split(manifest, self.cache, rule=self.report_split_rule, train_share=self.report_train_share)
            test_set = set(test)
            self.held_out = [i for i in self.ids if i in test_set]
            self.ids = [i for i in self.ids if i not in test_set]
            if not self.ids:
                raise DataError(manifest, f"no case left for pretraining: all {len(self.held_out)} selected cases are in "
                                          "the evaluation's test split")
        else:
            warnings.warn(f"data.report_split=all: T3D pretrains on the reports of every case in {manifest}, test split "
                          "included; report_retrieval and zero_shot on this cohort then score pairs seen in pretraining "
                          "(their rows say pairs_seen_in_pretraining=True), not unseen pairs", stacklevel=2)
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
        """What the release checkpoint records: spacing, normalisation, crop size, text encoder, which reports."""
        meta: Dict[str, Any] = {"patch_size": list(self.patch_size), "in_channels": 1,
                                "text_encoder": self.encoder_name, "text_dim": self.text_dim,
                                "crops_per_volume": self.crops_per_volume,
                                "report_split": self.report_split, "n_reports": len(self.ids)}
        if self.report_split == "train":
            meta.update(report_split_rule=self.report_split_rule, report_train_share=self.report_train_share,
                        n_reports_held_out=len(self.held_out))
        if isinstance(self.cache.plan, dict) and self.cache.plan.get("spacing") is not None:
            meta["spacing"] = list(self.cache.plan["spacing"])
        case = self.cache.meta(self.ids[0])
        for src, dst in (("normalization", "normalisation"), ("modality", "modality")):
            if src in case:
                meta[dst] = case[src]
        return meta
