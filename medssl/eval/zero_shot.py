"""Zero-shot classification of findings from text prompts (CLIP-style), and report-space alignment probes.

A finding is scored by comparing a volume's embedding with the embeddings of
a positive prompt set ("There is pleural effusion.") and a negative one
("No pleural effusion."), which the dataset declares with the meta value that
labels the finding (:func:`dataset_findings`: its dataset.json or a
prompts.json; the synthetic cohort declares the findings its reports describe): ``score = mean cos(v, pos) - mean cos(v, neg)``,
the prompt-ensemble zero-shot rule of CLIP (Radford et al., ICML 2021) and
of CT-CLIP / T3D evaluations on CT-RATE. AUC is computed from these scores;
no label is seen.

:class:`RidgeAlign` maps frozen image features into the text encoder's space
by ridge regression on the train split's (feature, report embedding) pairs,
so any encoder (random init, vision-only) can be scored with the same
retrieval and prompt rules: the "ridge" protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


@dataclass(frozen=True)
class Finding:
    """A finding: its prompts and how to read its binary label from manifest meta."""

    name: str
    positive: Tuple[str, ...]
    negative: Tuple[str, ...]
    label: Callable[[Mapping], int]


def _flag(key: str) -> Callable[[Mapping], int]:
    return lambda m: int(bool(m.get(key)) and m.get(key) not in ("none", 0, "0"))


def _differs(key: str, absent: Any) -> Callable[[Mapping], int]:
    return lambda m: int(m.get(key, absent) != absent)


def finding_from_dict(d: Mapping[str, Any], source: Union[str, Path]) -> Finding:
    """A :class:`Finding` from its declaration ``{"name", "positive": [...], "negative": [...], "label": {...}}``.

    ``label``: ``{"meta": key}`` is positive when the meta value is set and not
    "none" / 0; ``{"meta": key, "absent": value}`` when it differs from ``value``
    (a missing value counts as ``value``). A bad declaration is a
    :class:`DataError` naming ``source``.
    """
    name = d.get("name") if isinstance(d, Mapping) else None
    label = d.get("label") if isinstance(d, Mapping) else None
    pos, neg = (d.get("positive"), d.get("negative")) if isinstance(d, Mapping) else (None, None)
    ok = (isinstance(name, str) and name and isinstance(label, Mapping) and isinstance(label.get("meta"), str)
          and all(isinstance(p, list) and p and all(isinstance(t, str) for t in p) for p in (pos, neg)))
    if not ok:
        raise DataError(Path(source), f"findings: {d!r} is not {{name, positive: [text], negative: [text], label: {{meta: key}}}}")
    rule = _differs(label["meta"], label["absent"]) if "absent" in label else _flag(label["meta"])
    return Finding(name, tuple(pos), tuple(neg), rule)


def dataset_findings(manifest: Union[str, Path]) -> Tuple[Finding, ...]:
    """The findings a dataset declares for zero-shot evaluation, read next to its ``manifest``.

    ``prompts.json`` (a list of finding declarations, or ``{"findings": [...]}``)
    when present, else the ``findings`` list of ``dataset.json``; a synthetic
    cohort written before it declared its findings gets the ones its reports
    describe (:data:`medssl.synth.reports.ZERO_SHOT_FINDINGS`). A dataset that
    declares none is a :class:`DataError` naming the file to add.
    """
    root = Path(manifest).parent
    prompts, ds = root / "prompts.json", root / "dataset.json"
    for path in (prompts, ds):
        if not path.is_file():
            continue
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(path, f"not readable JSON ({exc})") from None
        found = info.get("findings") if isinstance(info, dict) else (info if path == prompts else None)
        if found is None and path == ds and isinstance(info, dict) and \
                (info.get("generator") or {}).get("name") == "medssl.synth":
            from ..synth.reports import ZERO_SHOT_FINDINGS

            found = ZERO_SHOT_FINDINGS
        if found is not None:
            if not isinstance(found, list) or not found:
                raise DataError(path, "findings: expected a non-empty list of finding declarations")
            return tuple(finding_from_dict(f, path) for f in found)
    raise DataError(ds, "declares no zero-shot findings: add a \"findings\" list to dataset.json, or a prompts.json "
                        "next to the manifest ([{name, positive: [text], negative: [text], label: {meta: key}}])")


def prompt_scores(volumes: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> np.ndarray:
    """``[N]`` zero-shot scores: mean cosine to ``positive: [P, J]`` minus mean cosine to ``negative: [Q, J]``."""
    v = F.normalize(torch.as_tensor(volumes).double(), dim=1)
    p = F.normalize(torch.as_tensor(positive).double(), dim=1)
    n = F.normalize(torch.as_tensor(negative).double(), dim=1)
    return ((v @ p.T).mean(1) - (v @ n.T).mean(1)).numpy()


def zero_shot_scores(
    volumes: torch.Tensor,
    meta: Sequence[Mapping],
    embed_text: Callable[[List[str]], torch.Tensor],
    findings: Sequence[Finding],
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{finding: (labels [N], prompt scores [N])}``: the labels read from ``meta``, the scores of the prompts."""
    if len(meta) != len(volumes):
        raise ValueError(f"meta: {len(meta)} records for {len(volumes)} volume embeddings")
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for f in findings:
        s = prompt_scores(volumes, embed_text(list(f.positive)), embed_text(list(f.negative)))
        out[f.name] = (np.asarray([f.label(m) for m in meta]), np.asarray(s, dtype=np.float64))
    return out


class RidgeAlign:
    """Ridge regression ``features [N, E] -> text embeddings [N, Dt]`` (standardised features, closed form)."""

    def __init__(self, alpha: float = 1.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha: must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "RidgeAlign":
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        z = (x - self.mu) / self.sd
        self.y_mu = y.mean(0)
        # dual form: W = Z^T (Z Z^T + alpha I)^-1 (Y - mean), cheap when N << E
        k = z @ z.T + self.alpha * np.eye(len(z))
        self.w = z.T @ np.linalg.solve(k, y - self.y_mu)  # [E, Dt]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mu) / self.sd
        return z @ self.w + self.y_mu
