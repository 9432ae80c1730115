"""Evaluation tasks, registered in :data:`medssl.registry.TASKS`.

A task is ``run(model: ModelSpec, data: EvalData, settings: EvalSettings) ->
list[row]``; a row is a flat dict with ``model, task, protocol, target,
label_fraction, n_labelled, seed`` and the metric values of one seed. The
train/test split comes from :mod:`medssl.splits`; each seed changes the
labelled subset of the train split and the initialisation of the head (and,
for the random baseline, of the encoder).

Tasks register with :func:`register_task`, naming their headline metric
(the one plotted and quoted): ``@register_task("x", help=..., primary_metric="auc")``.
Encoders come from ``model.encoder(seed, data)``: they take cache values and
apply the checkpoint's recorded normalisation (:mod:`medssl.eval.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import TASKS
from .classification import ClsFinetuneConfig, finetune_classifier, predict_proba
from .data import EvalData
from .features import REGION_MODES, extract_features, prepare
from .inputs import trained_embedding
from ..knn import KNNClassifier, knn_regress
from .linear_probe import LinearProbeClassifier, RidgeProbe
from .metrics import classification_report
from .paired import CASES_KEY
from .models import ModelSpec
from .regression import regression_report
from .segmentation import SegFinetuneConfig, evaluate_segmentation, finetune_patch_size, finetune_segmentation
from ..splits import train_test_split
from .splits import label_subset
from .survival import CoxProbe, concordance_index

Row = Dict[str, Any]
DEFAULT_TARGETS = {"classification": "severity", "regression": "emphysema_pct", "survival": "survival_time"}
#: Task name -> headline metric, filled by :func:`register_task`.
PRIMARY_METRIC: Dict[str, str] = {}


def register_task(name: str, *, help: str, primary_metric: str) -> Callable:
    """Decorator: register ``run(model, data, settings) -> rows`` in ``TASKS`` with its headline metric."""
    if not primary_metric:
        raise ValueError(f"primary_metric: task '{name}' needs a headline metric")

    def deco(fn: Callable) -> Callable:
        TASKS.register(name, help=help)(fn)
        PRIMARY_METRIC[name] = str(primary_metric)
        return fn

    return deco


@dataclass
class EvalSettings:
    """Everything a task needs besides the model and the data."""

    seeds: Sequence[int] = (0, 1, 2)
    label_fraction: float = 0.1
    fractions: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0)
    target: Optional[str] = None
    sweep_task: str = "classification"
    split_rule: str = "hash"
    train_share: float = 0.75
    feature_mode: str = "resize"
    batch_size: int = 4
    knn_k: int = 20
    knn_temperature: float = 0.07
    finetune_classification: bool = True
    cls: ClsFinetuneConfig = field(default_factory=ClsFinetuneConfig)
    seg: SegFinetuneConfig = field(default_factory=SegFinetuneConfig)
    survival_components: int = 8
    survival_penalizer: float = 0.1
    event_key: str = "event"
    n_boot: int = 1000
    device: str = "cpu"
    text_embed: Optional[Callable[[List[str]], np.ndarray]] = None


def split(data: EvalData, s: EvalSettings) -> Tuple[List[str], List[str]]:
    tr, te = train_test_split(data.ids, rule=s.split_rule, train_share=s.train_share,
                              splits=[data.splits.get(i) for i in data.ids],
                              groups=[data.groups.get(i) for i in data.ids])
    if len(tr) < 2 or len(te) < 2:
        raise DataError(data.source, f"too few cases to evaluate: {len(tr)} train / {len(te)} test")
    return tr, te


class _Features:
    """Frozen features per (model, seed); a pretrained model's features are computed once.

    They are kept on the model (``ModelSpec.feature_cache``), keyed on the
    seed, the data, the patch size and the feature mode, so the tasks and
    targets of one evaluation share one pass per model and seed.
    """

    def __init__(self, model: ModelSpec, data: EvalData, s: EvalSettings) -> None:
        self.model, self.data, self.s = model, data, s
        self._cache = model.feature_cache

    def _key(self, seed: int) -> Tuple[Any, ...]:
        m, d = self.model, self.data
        return (bool(m.pretrained), 0 if m.pretrained else int(seed), d.source, int(d.spatial_dims), tuple(d.ids),
                tuple(m.patch_size), self.s.feature_mode)

    def __call__(self, seed: int, ids: Sequence[str]) -> np.ndarray:
        key = self._key(seed)
        if key not in self._cache:
            enc = self.model.encoder(seed, self.data).to(self.s.device)
            regions = None
            if self.s.feature_mode in REGION_MODES:
                from .regions import case_region

                regions = (case_region(self.data, i, self.s.feature_mode) for i in self.data.ids)
            f = extract_features(enc, (self.data.image(i) for i in self.data.ids), patch_size=self.model.patch_size,
                                 mode=self.s.feature_mode, batch_size=self.s.batch_size, device=self.s.device,
                                 embed=trained_embedding(enc), regions=regions)
            self._cache[key] = dict(zip(self.data.ids, f))
        return np.stack([self._cache[key][i] for i in ids])


def cases(ids: Sequence[str], metric: str, kind: str, **arrays: Any) -> Dict[str, Any]:
    """The per-test-patient payload of a row (see :mod:`medssl.eval.paired`)."""
    return {"ids": [str(i) for i in ids], "metric": metric, "kind": kind,
            "arrays": {k: np.asarray(v) for k, v in arrays.items()}}


def _row(model: ModelSpec, task: str, protocol: str, target: str, frac: float, n_lab: int, seed: int, **metrics) -> Row:
    return {"model": model.name, "task": task, "protocol": protocol, "target": target, "label_fraction": frac,
            "n_labelled": n_lab, "seed": seed, **metrics}


def _classification(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    target = s.target or DEFAULT_TARGETS["classification"]
    tr, te = split(data, s)
    y_all = data.class_labels(target)
    n_cls = max(2, int(y_all.max()) + 1)
    ytr, yte = data.class_labels(target, tr), data.class_labels(target, te)
    feats = _Features(model, data, s)
    inputs = None
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = feats(seed, tr), feats(seed, te)
        for frac in fractions:
            sub = label_subset(len(tr), frac, seed, labels=ytr)
            probe = LinearProbeClassifier(seed=seed).fit(ftr[sub], ytr[sub], num_classes=n_cls)
            results = {"linear": probe.predict_proba(fte)}
            knn = KNNClassifier(k=min(s.knn_k, len(sub)), temperature=s.knn_temperature).fit(ftr[sub], ytr[sub])
            results["knn"] = knn.predict_proba(fte, num_classes=n_cls)
            if s.finetune_classification:
                if inputs is None:
                    inputs = {i: prepare(data.image(i), model.patch_size, "resize")[0] for i in data.ids}
                xtr = torch.stack([inputs[tr[j]] for j in sub])
                net = finetune_classifier(model.encoder(seed, data), xtr, ytr[sub], num_classes=n_cls, config=s.cls, seed=seed,
                                          device=s.device)
                results["finetune"] = predict_proba(net, torch.stack([inputs[i] for i in te]), device=s.device)
            for protocol, proba in results.items():
                m = classification_report(yte, proba, n_boot=s.n_boot, seed=seed)  # [N, 2]: binary AUC/AP
                m.update(prediction_flags(proba))
                rows.append(_row(model, "classification", protocol, target, frac, len(sub), seed, **m,
                                 **{CASES_KEY: cases(te, "auc", "auc", y=yte, proba=proba)}))
    return rows


def prediction_flags(proba: np.ndarray) -> Dict[str, Any]:
    """``one_class``: 1.0 when every test prediction is the same class (a degenerate probe), else 0.0."""
    pred = np.asarray(proba).argmax(axis=1)
    return {"one_class": float(len(np.unique(pred)) == 1)}


def _regression(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    target = s.target or DEFAULT_TARGETS["regression"]
    tr, te = split(data, s)
    ytr = data.target(target, tr).astype(np.float64)
    yte = data.target(target, te).astype(np.float64)
    feats = _Features(model, data, s)
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = feats(seed, tr), feats(seed, te)
        for frac in fractions:
            sub = label_subset(len(tr), frac, seed)
            preds = {"linear": RidgeProbe(seed=seed).fit(ftr[sub], ytr[sub]).predict(fte),
                     "knn": knn_regress(ftr[sub], ytr[sub], fte, k=min(s.knn_k, len(sub)),
                                        temperature=s.knn_temperature).numpy()}
            for protocol, p in preds.items():
                rows.append(_row(model, "regression", protocol, target, frac, len(sub), seed, **regression_report(yte, p),
                                 **{CASES_KEY: cases(te, "r2", "r2", y=yte, pred=p)}))
    return rows


def _survival(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    target = s.target or DEFAULT_TARGETS["survival"]
    tr, te = split(data, s)
    t_tr, t_te = data.target(target, tr).astype(float), data.target(target, te).astype(float)
    e_tr, e_te = data.target(s.event_key, tr).astype(int), data.target(s.event_key, te).astype(int)
    feats = _Features(model, data, s)
    rows: List[Row] = []
    for seed in s.seeds:
        ftr, fte = feats(seed, tr), feats(seed, te)
        for frac in fractions:
            sub = label_subset(len(tr), frac, seed, labels=e_tr, min_labels=4)
            extra: Dict[str, Any] = {}
            if e_tr[sub].sum() == 0:
                c = float("nan")  # no event among the labelled cases: no Cox fit
            else:
                probe = CoxProbe(n_components=s.survival_components, penalizer=s.survival_penalizer)
                risk = probe.fit(ftr[sub], t_tr[sub], e_tr[sub]).risk(fte)
                c = concordance_index(t_te, risk, e_te)
                extra[CASES_KEY] = cases(te, "c_index", "c_index", time=t_te, event=e_te, risk=risk)
            rows.append(_row(model, "survival", "cox", target, frac, len(sub), seed, c_index=c, **extra))
    return rows


def _segmentation(model: ModelSpec, data: EvalData, s: EvalSettings, fractions: Sequence[float]) -> List[Row]:
    tr, te = split(data, s)
    tr = [i for i in tr if data.label(i) is not None]
    te = [i for i in te if data.label(i) is not None]
    if len(tr) < 1 or len(te) < 1:
        raise DataError(data.source, "segmentation needs label maps ('label' in the manifest) in the train and test splits")
    labels = {i: data.label(i) for i in tr + te}
    n_cls = int(max(int(v.max()) for v in labels.values())) + 1
    names = data.label_names if data.label_names and len(data.label_names) == n_cls - 1 else None
    rows: List[Row] = []
    patch = finetune_patch_size(model.encoder(0, data), [labels[i].shape for i in tr], model.patch_size, s.seg)
    for seed in s.seeds:
        for frac in fractions:
            sub = label_subset(len(tr), frac, seed, min_labels=1)
            ids = [tr[j] for j in sub]
            net = finetune_segmentation(model.encoder(seed, data), [data.image(i) for i in ids], [labels[i] for i in ids],
                                        num_classes=n_cls, patch_size=patch, config=s.seg, seed=seed,
                                        device=s.device)
            per: Dict[str, np.ndarray] = {}
            m = evaluate_segmentation(net, [data.image(i) for i in te], [labels[i] for i in te], num_classes=n_cls,
                                      patch_size=patch, spacings=[data.spacing.get(i) for i in te],
                                      class_names=names, overlap=s.seg.overlap, device=s.device, per_case=per)
            rows.append(_row(model, "segmentation", "finetune", "label", frac, len(sub), seed, **m,
                             patch="x".join(str(v) for v in patch),
                             **{CASES_KEY: cases(te, "mean_dice", "mean", score=per["mean_dice"])}))
    return rows


@register_task("classification", help="frozen linear probe, kNN and fine-tuning; AUC, accuracy, AP with bootstrap CIs", primary_metric="auc")
def classification_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _classification(model, data, s, [s.label_fraction])


@register_task("regression", help="ridge probe and kNN regression on frozen features; R2, MAE, Spearman", primary_metric="r2")
def regression_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _regression(model, data, s, [s.label_fraction])


@register_task("survival", help="Cox model (penalised) on PCA of frozen features; concordance index", primary_metric="c_index")
def survival_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _survival(model, data, s, [s.label_fraction])


@register_task("segmentation", help="encoder + UNet decoder fine-tuned with Dice+CE; Dice and HD95 per class", primary_metric="mean_dice")
def segmentation_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    return _segmentation(model, data, s, [s.label_fraction])


SWEEPABLE = {"classification": _classification, "regression": _regression, "survival": _survival,
             "segmentation": _segmentation}


@TASKS.register("label_efficiency", help="a task at 5-100 % of the train labels over seeds (mean +- sd)")
def label_efficiency_task(model: ModelSpec, data: EvalData, s: EvalSettings) -> List[Row]:
    if s.sweep_task not in SWEEPABLE:
        raise ConfigError("sweep_task", f"unknown task '{s.sweep_task}' (sweepable: {', '.join(SWEEPABLE)})")
    rows = SWEEPABLE[s.sweep_task](model, data, s, list(s.fractions))
    for r in rows:
        r["task"] = sweep_name(s.sweep_task)
        r["sweep"] = True
    return rows


def sweep_name(task: str) -> str:
    """The table name of a label-efficiency sweep of ``task``."""
    return f"label_efficiency-{task}"


def primary_metric(task: str) -> str:
    """The headline metric of a task (or of a sweep's task)."""
    return PRIMARY_METRIC.get(task.split("label_efficiency-")[-1], "")
