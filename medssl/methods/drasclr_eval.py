"""DrasCLR evaluation tasks on patient-level features and dense patch maps, registered in ``TASKS``.

Every subject is the set of its anatomical patches (a DrasCLR patch set:
:mod:`medssl.anatomy.prepare`), encoded at their own atlas locations into
``[S, N, D]`` (:func:`medssl.anatomy.patient.subject_features`). The patch set
is the one the checkpoint was pretrained on (``meta["data"]["patch_set"]``,
recorded by :class:`~medssl.anatomy.patch_source.AnatomicalPatchSource`; the
random-initialisation row inherits it). Tasks (protocol = pooling):

- ``patient_classification`` (default target ``severity``): macro AUC of a
  linear probe on ``mean`` / ``graph`` pooled features, and of ``attention``
  (gated attention MIL) / ``graph_conv`` heads trained on the labelled
  train patients.
- ``patient_regression`` (``lung_function``): ridge probe (frozen poolings),
  MSE-trained heads (learned poolings); R2, MAE, Spearman.
- ``patient_survival`` (``survival_time`` + ``event``): penalised Cox on PCA
  of the pooled features; Cox-loss-trained heads; C-index.
- ``dense_emphysema``: a ridge regressor of each block's emphysema fraction
  (target: the lesion label map's emphysema class resampled onto the cache
  grid) from frozen patch features, painted back at the mapped blocks inside
  the lung mask, thresholded at the value that maximises the labelled train
  patients' Dice; mean Dice (and soft Dice) over the test patients.
- ``patient_label_efficiency``: one of the above at every label fraction.

Split, label subsets and seeds follow :mod:`medssl.eval.tasks` (PROTOCOL.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..anatomy import patient as P
from ..anatomy.dense_map import block_fractions, dice, load_geometry, paint_blocks, read_label_on_grid, soft_dice
from ..errors import DataError
from ..eval.data import EvalData
from ..eval.linear_probe import LinearProbeClassifier, RidgeProbe
from ..eval.metrics import classification_report
from ..eval.models import ModelSpec
from ..eval.regression import regression_report
from ..eval.splits import label_subset
from ..eval.survival import CoxProbe, concordance_index
from ..eval.paired import CASES_KEY
from ..eval.tasks import EvalSettings, _row, cases, register_task, split, sweep_name

Row = Dict[str, Any]
TARGETS = {"patient_classification": "severity", "patient_regression": "lung_function",
           "patient_survival": "survival_time"}
LEARNED = ("attention", "graph_conv")
HEAD_STEPS = 300  # full-batch AdamW steps of the learned pooling heads
DICE_THRESHOLDS = tuple(np.round(np.arange(0.02, 0.62, 0.02), 2))


def patch_set_root(model: ModelSpec, data: EvalData) -> Path:
    """The DrasCLR patch set of ``model`` (its checkpoint's ``data.patch_set``)."""
    root = (model.meta.get("data") or {}).get("patch_set") or model.meta.get("patch_set")
    if not root or not (Path(root) / "report.json").is_file():
        raise DataError(data.source, f"{model.name}: no DrasCLR patch set recorded with the model (got {root!r}); "
                                     "evaluate a DrasCLR checkpoint, or set model.meta['patch_set']")
    return Path(root)


class PatientData:
    """Subjects of a patch set in the evaluation split, with their ``[S, N, D]`` features per seed."""

    def __init__(self, model: ModelSpec, data: EvalData, s: EvalSettings) -> None:
        from ..anatomy.patch_source import AnatomicalPatchSource

        self.model, self.data, self.s = model, data, s
        self.root = patch_set_root(model, data)
        self.source = AnatomicalPatchSource(root=self.root, progress=False)
        have = set(self.source.ids)
        tr, te = split(data, s)
        self.train, self.test = [i for i in tr if i in have], [i for i in te if i in have]
        if len(self.train) < 2 or len(self.test) < 2:
            raise DataError(self.root, f"too few subjects with patches: {len(self.train)} train / {len(self.test)} test")
        self.adj = P.normalised_adjacency(P.grid_adjacency(self.source.grid.neighbours, self.source.num_locations))

    def features(self, seed: int, ids: Sequence[str]) -> np.ndarray:
        """``[S, N, D]`` for ``ids``, kept on the model (a pretrained model's features are computed once)."""
        ids_all = self.train + self.test
        key = ("patient_features", 0 if self.model.pretrained else int(seed), str(self.root), tuple(ids_all))
        cache = self.model.feature_cache
        if key not in cache:
            enc = self.model.build(seed)
            f = P.subject_features(enc, self.source, ids_all, batch_size=64, device=self.s.device)
            cache[key] = {cid: f[j] for j, cid in enumerate(ids_all)}
        return np.stack([cache[key][i] for i in ids])

    def pooled(self, kind: str, f: np.ndarray) -> np.ndarray:
        return P.pool(f, kind, self.adj)

    def learned(self, kind: str, dim: int) -> torch.nn.Module:
        return P.GatedAttentionPool(dim) if kind == "attention" else P.GraphConvPool(dim, self.adj)


def _classification(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    pd_, target = PatientData(model, data, s), s.target or TARGETS["patient_classification"]
    ytr, yte = data.class_labels(target, pd_.train), data.class_labels(target, pd_.test)
    n_cls = max(2, int(data.class_labels(target).max()) + 1)
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = pd_.features(seed, pd_.train), pd_.features(seed, pd_.test)
        for frac in fractions:
            sub = label_subset(len(pd_.train), frac, seed, labels=ytr)
            probas = {}
            for kind in P.POOLINGS:
                probe = LinearProbeClassifier(seed=seed).fit(pd_.pooled(kind, ftr[sub]), ytr[sub], num_classes=n_cls)
                probas[kind] = probe.predict_proba(pd_.pooled(kind, fte))
            for kind in LEARNED:
                head = P.fit_pooled_head(pd_.learned(kind, ftr.shape[2]), ftr[sub], ytr[sub], loss="ce",
                                         num_classes=n_cls, steps=HEAD_STEPS, seed=seed)
                probas[kind] = torch.softmax(torch.as_tensor(head.predict(fte)), 1).numpy()
            for kind, proba in probas.items():
                m = classification_report(yte, proba, n_boot=s.n_boot, seed=seed)
                rows.append(_row(model, "patient_classification", kind, target, frac, len(sub), seed, **m,
                                 **{CASES_KEY: cases(pd_.test, "auc", "auc", y=yte, proba=proba)}))
    return rows


def _regression(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    pd_, target = PatientData(model, data, s), s.target or TARGETS["patient_regression"]
    ytr, yte = data.target(target, pd_.train).astype(float), data.target(target, pd_.test).astype(float)
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = pd_.features(seed, pd_.train), pd_.features(seed, pd_.test)
        for frac in fractions:
            sub = label_subset(len(pd_.train), frac, seed)
            preds = {kind: RidgeProbe(seed=seed).fit(pd_.pooled(kind, ftr[sub]), ytr[sub]).predict(pd_.pooled(kind, fte))
                     for kind in P.POOLINGS}
            for kind in LEARNED:
                head = P.fit_pooled_head(pd_.learned(kind, ftr.shape[2]), ftr[sub], ytr[sub], loss="mse", steps=HEAD_STEPS, seed=seed)
                preds[kind] = head.predict(fte)[:, 0]
            for kind, p in preds.items():
                rows.append(_row(model, "patient_regression", kind, target, frac, len(sub), seed, **regression_report(yte, p),
                                 **{CASES_KEY: cases(pd_.test, "r2", "r2", y=yte, pred=p)}))
    return rows


def _survival(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    pd_, target = PatientData(model, data, s), s.target or TARGETS["patient_survival"]
    t_tr, t_te = data.target(target, pd_.train).astype(float), data.target(target, pd_.test).astype(float)
    e_tr, e_te = data.target(s.event_key, pd_.train).astype(int), data.target(s.event_key, pd_.test).astype(int)
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = pd_.features(seed, pd_.train), pd_.features(seed, pd_.test)
        for frac in fractions:
            sub = label_subset(len(pd_.train), frac, seed, labels=e_tr, min_labels=4)
            risks: Dict[str, np.ndarray] = {}
            if e_tr[sub].sum() > 0 and len(sub) >= 3:  # else no Cox fit: NaN rows
                for kind in P.POOLINGS:
                    probe = CoxProbe(n_components=s.survival_components, penalizer=s.survival_penalizer)
                    risks[kind] = probe.fit(pd_.pooled(kind, ftr[sub]), t_tr[sub], e_tr[sub]).risk(pd_.pooled(kind, fte))
                for kind in LEARNED:
                    head = P.fit_pooled_head(pd_.learned(kind, ftr.shape[2]), ftr[sub], t_tr[sub], loss="cox",
                                             event=e_tr[sub], steps=HEAD_STEPS, seed=seed)
                    risks[kind] = head.predict(fte)[:, 0]
            for kind in P.POOLINGS + LEARNED:
                c = concordance_index(t_te, risks[kind], e_te) if kind in risks else float("nan")
                extra = {CASES_KEY: cases(pd_.test, "c_index", "c_index", time=t_te, event=e_te, risk=risks[kind])} \
                    if kind in risks else {}
                rows.append(_row(model, "patient_survival", kind, target, frac, len(sub), seed, c_index=c, **extra))
    return rows


def emphysema_value(data: EvalData) -> int:
    """The emphysema class of the lesion label maps (``lesion_labels`` of dataset.json; default 1)."""
    ds = Path(data.source).parent / "dataset.json"
    if ds.is_file():
        labels = json.loads(ds.read_text(encoding="utf-8")).get("lesion_labels") or {}
        for k, v in labels.items():
            if str(v).lower() == "emphysema" and str(k).isdigit():
                return int(k)
    return 1


def _dense_subject(pd_: PatientData, data: EvalData, cid: str, value: int) -> Dict[str, Any]:
    """Geometry, lung mask, emphysema mask (cache grid, (X, Y, Z)) and true block fractions of ``cid``."""
    g = load_geometry(pd_.root, cid)
    rel = data.meta.get(cid, {}).get("lesion_label")
    if not rel:
        raise DataError(data.source, f"{cid}: no 'lesion_label' path in the manifest meta (needed for dense_emphysema)")
    path = Path(rel) if Path(rel).is_absolute() else Path(data.source).parent / rel
    emph = read_label_on_grid(path, g["shape_xyz"], g["affine"]) == value
    lung = np.load(pd_.root / "masks" / f"{cid}.npy", allow_pickle=False) > 0
    return {"geometry": g, "emph": emph, "lung": lung, "fractions": block_fractions(emph, g["corners_xyz"], g["patch"])}


def dense_map(values: np.ndarray, subj: Dict[str, Any]) -> np.ndarray:
    """Per-block values painted back into the subject, zero outside the lung mask."""
    g = subj["geometry"]
    m, _ = paint_blocks(values, g["corners_xyz"], g["patch"], g["shape_xyz"])
    return m * subj["lung"]


def _best_threshold(maps: List[np.ndarray], truths: List[np.ndarray]) -> float:
    scores = [np.mean([dice(m >= t, e) for m, e in zip(maps, truths)]) for t in DICE_THRESHOLDS]
    return float(DICE_THRESHOLDS[int(np.argmax(scores))])


def _dense(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    pd_ = PatientData(model, data, s)
    value = emphysema_value(data)
    subj = {cid: _dense_subject(pd_, data, cid, value) for cid in pd_.train + pd_.test}
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = pd_.features(seed, pd_.train), pd_.features(seed, pd_.test)
        for frac in fractions:
            sub = label_subset(len(pd_.train), frac, seed, min_labels=2)
            lab = [pd_.train[j] for j in sub]
            y = np.concatenate([subj[c]["fractions"] for c in lab])
            probe = RidgeProbe(seed=seed).fit(ftr[sub].reshape(-1, ftr.shape[2]), y)
            pred = {c: np.clip(probe.predict(f), 0, 1) for c, f in list(zip(lab, ftr[sub])) + list(zip(pd_.test, fte))}
            thr = _best_threshold([dense_map(pred[c], subj[c]) for c in lab], [subj[c]["emph"] for c in lab])
            thr_true = _best_threshold([dense_map(subj[c]["fractions"], subj[c]) for c in lab], [subj[c]["emph"] for c in lab])
            maps = {c: dense_map(pred[c], subj[c]) for c in pd_.test}
            truth_f = np.concatenate([subj[c]["fractions"] for c in pd_.test])
            m = {"dice": float(np.mean([dice(maps[c] >= thr, subj[c]["emph"]) for c in pd_.test])),
                 "soft_dice": float(np.mean([soft_dice(maps[c], subj[c]["emph"]) for c in pd_.test])),
                 "patch_r2": regression_report(truth_f, np.concatenate([pred[c] for c in pd_.test]))["r2"],
                 "threshold": thr,
                 "dice_true_blocks": float(np.mean([dice(dense_map(subj[c]["fractions"], subj[c]) >= thr_true, subj[c]["emph"])
                                                    for c in pd_.test]))}
            rows.append(_row(model, "dense_emphysema", "ridge", "emphysema", frac, len(sub), seed, **m))
    return rows


SWEEPABLE = {"patient_classification": _classification, "patient_regression": _regression,
             "patient_survival": _survival, "dense_emphysema": _dense}


@register_task("patient_classification", help="DrasCLR patient features (mean/graph/attention/graph-conv pooling): macro AUC",
               primary_metric="auc")
def patient_classification_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _classification(model, data, s, [s.label_fraction])


@register_task("patient_regression", help="DrasCLR patient features: ridge / trained pooling heads; R2, MAE, Spearman",
               primary_metric="r2")
def patient_regression_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _regression(model, data, s, [s.label_fraction])


@register_task("patient_survival", help="DrasCLR patient features: Cox on pooled features, Cox-trained pooling heads; C-index",
               primary_metric="c_index")
def patient_survival_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _survival(model, data, s, [s.label_fraction])


@register_task("dense_emphysema", help="per-patch emphysema fraction painted back at the mapped blocks; Dice vs the lesion map",
               primary_metric="dice")
def dense_emphysema_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _dense(model, data, s, [s.label_fraction])


@register_task("patient_label_efficiency", help="a DrasCLR patient task at every label fraction (--sweep-task)",
               primary_metric="auc")
def patient_label_efficiency_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    task = s.sweep_task if s.sweep_task in SWEEPABLE else f"patient_{s.sweep_task}"
    if task not in SWEEPABLE:
        from ..errors import ConfigError

        raise ConfigError("sweep_task", f"unknown task '{s.sweep_task}' (sweepable: {', '.join(SWEEPABLE)})")
    rows = SWEEPABLE[task](model, data, s, list(s.fractions))
    for r in rows:
        r["task"], r["sweep"] = sweep_name(task), True
    return rows
