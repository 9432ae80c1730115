"""Report <-> volume retrieval and zero-shot finding classification, registered in ``TASKS``.

Two protocols per model:

- ``native``: a T3D checkpoint's own heads. The volume embedding is the
  method's crop aggregation over sliding crops of the checkpoint's crop size
  covering the whole volume (native spacing), projected into the joint space;
  reports and prompts go through the checkpoint's text encoder and text
  projection. Needs the full release checkpoint, ``ModelSpec.meta["checkpoint"]``
  (set by :func:`~medssl.eval.models.from_checkpoint`; accepted only when its
  encoder weights equal the evaluated encoder's).
- ``ridge``: for any encoder (random init, vision-only baselines, T3D alike):
  mean-pooled frozen features of the same sliding crops, mapped into the text
  encoder's space by ridge regression fitted on the train split's
  (feature, report embedding) pairs (:class:`~medssl.eval.zero_shot.RidgeAlign`).

Retrieval and zero-shot AUC are computed on the test split. Crops are cut from
cache values and converted to the checkpoint's recorded normalisation inside
the encoder (:mod:`medssl.eval.inputs`), for both protocols.

Every row says ``pairs_seen_in_pretraining``: True when the checkpoint's
pretraining read the reports of test cases, so the score is not on unseen
pairs (:func:`pairs_seen`). T3D pretrains on the train split's reports by
default (source option ``report_split``, recorded in the sidecar's ``data``);
a checkpoint made with ``report_split=all`` or before the option existed is
flagged, and the task warns. Rows are flagged rather than refused, so old
checkpoints still evaluate.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..eval.data import EvalData
from ..eval.features import extract_features, sliding_patches
from ..eval.models import ModelSpec
from ..eval.paired import CASES_KEY
from ..eval.retrieval import bidirectional_recall, retrieval_ranks
from ..eval.tasks import EvalSettings, cases, register_task, split
from ..eval.metrics import binary_auc
from ..eval.zero_shot import RidgeAlign, dataset_findings, zero_shot_scores

TEXT_METHODS = ("t3d",)


@functools.lru_cache(maxsize=2)
def text_encoder(name: str) -> Any:
    """A frozen :class:`~medssl.text.TextEncoder`, loaded once per process."""
    from ..text import TextEncoder

    return TextEncoder(name)


def report_text(text: str, case: str) -> str:
    """Findings + impression, as embedded in pretraining (no language check: evaluation never rejects)."""
    from ..text import parse_report

    return parse_report(text, case=case, check_language=False).text


def load_t3d(model: ModelSpec) -> Optional[torch.nn.Module]:
    """The full T3D method of a checkpoint ``model`` (eval mode), or None for other models."""
    from ..checkpoint import load_release
    from ..registry import BACKBONES, METHODS

    if not model.pretrained or model.meta.get("method") not in TEXT_METHODS:
        return None
    path = Path(model.meta["checkpoint"]) if model.meta.get("checkpoint") else None
    if path is not None and path.is_file():
        encoder = model.build(0).state_dict()
        state, meta = load_release(path)
        prefix = meta["encoder_prefix"]
        if all(k[len(prefix):] in encoder and torch.equal(state[k], encoder[k[len(prefix):]]) for k in meta["encoder_keys"]):
            cfg = meta["config"]
            bb = dict(cfg["backbone"])
            kwargs = {k: v for k, v in cfg["method"].items() if k != "name"}
            method = METHODS.build(cfg["method"]["name"], backbone=BACKBONES.build(bb.pop("name"), **bb), **kwargs)
            method.load_state_dict(state, strict=True)
            return method.eval()
    warnings.warn(f"{model.name}: the full T3D checkpoint was not found (meta['checkpoint'] = {str(path) if path else None!r}, "
                  "or its encoder differs); only the ridge protocol is reported")
    return None


@torch.no_grad()
def native_volume_embeddings(method: Any, data: EvalData, ids: Sequence[str], patch_size: Sequence[int], *,
                             batch_size: int = 4, device: str = "cpu", encoder: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """``[N, joint_dim]``: sliding crops of each volume -> encoder -> the method's aggregation and projection.

    ``encoder``: the method's encoder behind the input conversion (default ``method.encoder``, cache values as they are).
    """
    method = method.to(device).eval()
    enc = (encoder or method.encoder).to(device).eval()
    out = []
    for i in ids:
        crops = sliding_patches(torch.from_numpy(data.image(i))[None], patch_size)  # [P, 1, *patch]
        h = torch.cat([enc(crops[j: j + batch_size].to(device)) for j in range(0, len(crops), batch_size)])
        out.append(method.volume_embedding(h[None]).cpu()[0])  # [J]
    return torch.stack(out)


def pairs_seen(model: ModelSpec, data: EvalData, s: EvalSettings, test_ids: Sequence[str]) -> bool:
    """Whether ``model``'s pretraining read the reports of any of ``test_ids``.

    False for a model that never read reports (random init, vision-only
    methods). For a text method (``TEXT_METHODS``) the sidecar's
    ``data.report_split`` decides: ``"train"`` with this evaluation's split
    rule and train share is False; ``"train"`` with another rule or share is
    True when that split's train side (recomputed on ``data``) holds a test
    case; ``"all"`` or no record (checkpoints from before the option, which
    read every report) is True.
    """
    if not model.pretrained or model.meta.get("method") not in TEXT_METHODS:
        return False
    d = model.meta.get("data") or {}
    if d.get("report_split") != "train":
        return True
    rule = str(d.get("report_split_rule", "hash"))
    share = float(d.get("report_train_share", 0.75))
    if rule == s.split_rule and abs(share - float(s.train_share)) < 1e-12:
        return False
    from ..errors import DataError

    try:
        _, held_out = split(data, EvalSettings(split_rule=rule, train_share=share))
    except (DataError, ValueError):
        return True
    return bool(set(test_ids) - set(held_out))


class _Embeddings:
    """Per model: test-split volume embeddings and the matching text-embedding function, per protocol and seed."""

    def __init__(self, model: ModelSpec, data: EvalData, s: EvalSettings) -> None:
        self.model, self.data, self.s = model, data, s
        self.train, self.test = split(data, s)
        self.train = [i for i in self.train if i in data.reports]
        self.test = [i for i in self.test if i in data.reports]
        if len(self.test) < 2 or len(self.train) < 2:
            from ..errors import DataError

            raise DataError(data.source, "report tasks need reports ('report' or 'report_text') for >= 2 train and test cases")
        name = str((model.meta.get("data") or {}).get("text_encoder") or "default")
        self.embed_raw = s.text_embed or (lambda texts: text_encoder(name).embed(texts).numpy())
        self.method = load_t3d(model)
        self.pairs_seen = pairs_seen(model, data, s, self.test)
        if self.pairs_seen:
            rec = (model.meta.get("data") or {}).get("report_split")
            how = f"data.report_split={rec}" if rec else "no report_split recorded: made before the option, it read every report"
            warnings.warn(f"{model.name}: pretrained on reports of this evaluation's test cases ({how}); its report_retrieval "
                          "and zero_shot rows say pairs_seen_in_pretraining=True: they do not score unseen pairs")
        self._feats: Dict[int, Dict[str, np.ndarray]] = {}

    def reports(self, ids: Sequence[str]) -> List[str]:
        return [report_text(self.data.reports[i], i) for i in ids]

    def protocols(self, seed: int) -> Dict[str, tuple]:
        """``{protocol: (volume embeddings [N_test, J], text embedding fn)}``."""
        out: Dict[str, tuple] = {}
        if self.method is not None:
            m = self.method

            def native_text(texts: List[str]) -> torch.Tensor:
                return m.text_embedding(torch.as_tensor(np.asarray(self.embed_raw(texts)), dtype=torch.float32)).detach()

            enc = self.model.adapt(m.encoder, self.data)
            vol = native_volume_embeddings(m, self.data, self.test, self.model.patch_size, batch_size=self.s.batch_size,
                                           device=self.s.device, encoder=enc)
            out["native"] = (vol, native_text)
        key = 0 if self.model.pretrained else seed
        if key not in self._feats:
            enc = self.model.encoder(seed, self.data).to(self.s.device)
            ids = self.train + self.test
            f = extract_features(enc, (self.data.image(i) for i in ids), patch_size=self.model.patch_size, mode="sliding",
                                 batch_size=self.s.batch_size, device=self.s.device)
            self._feats[key] = dict(zip(ids, f))
        f = self._feats[key]
        ridge = RidgeAlign().fit(np.stack([f[i] for i in self.train]), np.asarray(self.embed_raw(self.reports(self.train))))
        out["ridge"] = (torch.from_numpy(ridge.predict(np.stack([f[i] for i in self.test]))).float(),
                        lambda texts: torch.as_tensor(np.asarray(self.embed_raw(texts)), dtype=torch.float32))
        return out


def _row(model: ModelSpec, task: str, protocol: str, target: str, n: int, seed: int, **metrics: Any) -> Dict[str, Any]:
    return {"model": model.name, "task": task, "protocol": protocol, "target": target, "label_fraction": 1.0,
            "n_labelled": n, "seed": seed, **metrics}


#: The headline of retrieval: volume -> report recall@5 (with ~40 test reports, R@1 hits are too few to compare models).
RETRIEVAL_K = 5


@register_task("report_retrieval", help="report <-> volume recall@1/5/10 on the test split (T3D heads; ridge-aligned features)",
               primary_metric=f"a2b_R@{RETRIEVAL_K}")
def report_retrieval_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Dict[str, Any]]:
    emb = _Embeddings(model, data, s)
    rows = []
    for seed in s.seeds:
        for protocol, (vol, text_fn) in emb.protocols(seed).items():
            txt = text_fn(emb.reports(emb.test))
            hit = (retrieval_ranks(vol, txt) <= RETRIEVAL_K).astype(np.float64)  # per test volume, for paired deltas
            rows.append(_row(model, "report_retrieval", protocol, "report", len(emb.train), seed,
                             **bidirectional_recall(vol, txt), pairs_seen_in_pretraining=emb.pairs_seen,
                             **{CASES_KEY: cases(emb.test, f"a2b_R@{RETRIEVAL_K}", "mean", score=hit)}))
    return rows


@register_task("zero_shot", help="zero-shot AUC per finding from text prompts (T3D heads; ridge-aligned features)",
               primary_metric="auc")
def zero_shot_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Dict[str, Any]]:
    findings = dataset_findings(data.source)
    emb = _Embeddings(model, data, s)
    meta = [data.meta.get(i, {}) for i in emb.test]
    rows = []
    for seed in s.seeds:
        for protocol, (vol, text_fn) in emb.protocols(seed).items():
            scores = zero_shot_scores(vol, meta, text_fn, findings)
            for finding, (y, score) in scores.items():
                rows.append(_row(model, "zero_shot", protocol, finding, len(emb.train), seed, auc=binary_auc(y, score),
                                 pairs_seen_in_pretraining=emb.pairs_seen,
                                 **{CASES_KEY: cases(emb.test, "auc", "auc", y=y, proba=score)}))
    return rows
