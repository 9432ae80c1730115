"""Zero-shot classification of findings from text prompts (CLIP-style), and report-space alignment probes.

A finding is scored by comparing a volume's embedding with the embeddings of
a positive prompt set ("There is pleural effusion.") and a negative one
("No pleural effusion."): ``score = mean cos(v, pos) - mean cos(v, neg)``,
the prompt-ensemble zero-shot rule of CLIP (Radford et al., ICML 2021) and
of CT-CLIP / T3D evaluations on CT-RATE. AUC is computed from these scores;
no label is seen.

:class:`RidgeAlign` maps frozen image features into the text encoder's space
by ridge regression on the train split's (feature, report embedding) pairs,
so any encoder (random init, vision-only) can be scored with the same
retrieval and prompt rules: the "ridge" protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Finding:
    """A finding: its prompts and how to read its binary label from manifest meta."""

    name: str
    positive: Tuple[str, ...]
    negative: Tuple[str, ...]
    label: Callable[[Mapping], int]


def _flag(key: str) -> Callable[[Mapping], int]:
    return lambda m: int(bool(m.get(key)) and m.get(key) not in ("none", 0, "0"))


# The findings the synthetic cohort's reports describe (medssl.synth.reports) and its meta records.
SYNTH_FINDINGS: Tuple[Finding, ...] = (
    Finding("emphysema", ("There is emphysema.", "Lungs show emphysema.", "Centrilobular emphysema."),
            ("No emphysema.", "There is no emphysema.", "No evidence of emphysema."),
            lambda m: int(m.get("emphysema_pattern", "none") != "none")),
    Finding("nodule", ("There is a pulmonary nodule.", "Solid nodule in the lung.", "Pulmonary nodules."),
            ("No pulmonary nodules.", "There are no lung nodules.", "No suspicious pulmonary nodule."),
            _flag("nodule_count")),
    Finding("consolidation", ("Consolidation with air bronchograms.", "Airspace consolidation.", "There is consolidation."),
            ("No consolidation.", "No focal consolidation.", "No airspace consolidation."),
            _flag("consolidation")),
    Finding("effusion", ("There is pleural effusion.", "Pleural effusion.", "Bilateral pleural effusions."),
            ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusions."),
            _flag("effusion")),
)


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
    findings: Sequence[Finding] = SYNTH_FINDINGS,
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{finding: (labels [N], prompt scores [N])}``: the labels read from ``meta``, the scores of the prompts."""
    if len(meta) != len(volumes):
        raise ValueError(f"meta: {len(meta)} records for {len(volumes)} volume embeddings")
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for f in findings:
        s = prompt_scores(volumes, embed_text(list(f.positive)), embed_text(list(f.negative)))
        out[f.name] = (np.asarray([f.label(m) for m in meta]), np.asarray(s, dtype=np.float64))
    return out


def zero_shot_auc(
    volumes: torch.Tensor,
    meta: Sequence[Mapping],
    embed_text: Callable[[List[str]], torch.Tensor],
    findings: Sequence[Finding] = SYNTH_FINDINGS,
) -> Dict[str, float]:
    """``{finding: AUC}`` of prompt scores against the labels read from ``meta`` (NaN when one class is absent)."""
    from .metrics import binary_auc

    return {name: binary_auc(y, s) for name, (y, s) in zero_shot_scores(volumes, meta, embed_text, findings).items()}


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
