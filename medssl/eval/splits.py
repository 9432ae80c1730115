"""The fixed train/test split and the nested label-fraction subsets.

Split rule (``"hash"``, the default): cases are ordered by the SHA-256 hex
digest of their id; the first ``round(N * train_share)`` form the train split
and the rest the test split (48 / 16 for the 64-patient cohort at the default
share of 0.75). Cases that belong to one patient (the X-rays rendered from or
taken with a CT name it in ``pair``) form one group, and groups are split
whole: a patient's X-rays land in the split its CT lands in, so no patient is
on both sides and 2D and 3D evaluations of one cohort use the same patients. The rule depends on nothing but the ids, so it is the same on
every machine, for every method and under any manifest order, and it does not
follow an ordering of ids that might carry meaning (site, date). Rule
``"sorted"`` takes the first ids in plain sorted order instead; rule
``"manifest"`` uses each record's ``split`` field (``val`` counts as train).

Label fractions: the train cases are put in one seeded order, and a fraction
``f`` labels the first ``max(min_labels, ceil(f * N_train))`` of that order,
so the subsets of one seed are nested (5 % within 10 % within ... 100 %) and
a seed changes which cases are labelled. For class labels the order is
stratified: the seeded permutation of each class is interleaved round-robin,
so even a small prefix covers as many classes as it can.
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPLIT_RULES = ("hash", "sorted", "manifest")


def describe_split_rule(rule: str, train_share: float = 0.75) -> str:
    """One line recorded in every results table."""
    if rule == "hash":
        return f"sha256(id) order, first {train_share:.0%} train, rest test"
    if rule == "sorted":
        return f"sorted ids, first {train_share:.0%} train, rest test"
    if rule == "manifest":
        return "manifest 'split' field (val counted as train)"
    raise ValueError(f"split_rule: unknown rule '{rule}' (known: {', '.join(SPLIT_RULES)})")


def train_test_split(
    ids: Sequence[str],
    *,
    rule: str = "hash",
    train_share: float = 0.75,
    splits: Optional[Sequence[Optional[str]]] = None,
    groups: Optional[Sequence[Optional[str]]] = None,
) -> Tuple[List[str], List[str]]:
    """``(train_ids, test_ids)`` by ``rule``; each list in the order the rule defines.

    ``groups[i]``: the patient of case ``i`` (None: the case is its own
    patient); the hash and sorted rules split patients, not cases.
    """
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("ids: duplicate case ids")
    if groups is not None:
        if len(groups) != len(ids):
            raise ValueError(f"groups: {len(groups)} groups for {len(ids)} ids")
        if rule != "manifest":
            keys = [str(g) if g is not None else i for i, g in zip(ids, groups)]
            tr_keys, _ = train_test_split(sorted(set(keys)), rule=rule, train_share=train_share)
            tr_set = set(tr_keys)
            pos = {k: n for n, k in enumerate(_order(sorted(set(keys)), rule))}
            order = sorted(range(len(ids)), key=lambda n: (pos[keys[n]], ids[n]))
            return ([ids[n] for n in order if keys[n] in tr_set], [ids[n] for n in order if keys[n] not in tr_set])
    if not 0 < train_share < 1:
        raise ValueError(f"train_share: must lie in (0, 1), got {train_share}")
    describe_split_rule(rule)  # validates the name
    if rule == "manifest":
        if splits is None or len(splits) != len(ids):
            raise ValueError("splits: rule 'manifest' needs one split value per id")
        train = [i for i, s in zip(ids, splits) if s in ("train", "val")]
        test = [i for i, s in zip(ids, splits) if s == "test"]
        return train, test
    order = _order(ids, rule)
    n_train = int(round(len(ids) * train_share))
    n_train = min(max(n_train, 1), len(ids) - 1) if len(ids) > 1 else len(ids)
    return order[:n_train], order[n_train:]


def _order(ids: Sequence[str], rule: str) -> List[str]:
    if rule == "hash":
        return sorted(ids, key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())
    return sorted(ids)


def labelled_order(n: int, seed: int, labels: Optional[Sequence[int]] = None) -> np.ndarray:
    """A seeded order of ``range(n)``; stratified round-robin over classes when ``labels`` is given."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return rng.permutation(n)
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise ValueError(f"labels: {len(y)} labels for {n} cases")
    classes = rng.permutation(np.unique(y))
    queues: Dict[int, List[int]] = {int(c): list(rng.permutation(np.nonzero(y == c)[0])) for c in classes}
    order: List[int] = []
    while len(order) < n:
        for c in classes:
            q = queues[int(c)]
            if q:
                order.append(int(q.pop(0)))
    return np.asarray(order, dtype=np.int64)


def n_labelled(n: int, fraction: float, min_labels: int = 2) -> int:
    """``max(min_labels, ceil(fraction * n))``, capped at ``n``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction: must lie in (0, 1], got {fraction}")
    return int(min(n, max(min_labels, math.ceil(fraction * n - 1e-9))))


def label_subset(
    n: int, fraction: float, seed: int, labels: Optional[Sequence[int]] = None, min_labels: int = 2
) -> np.ndarray:
    """Indices into the train split that carry labels at ``fraction`` for ``seed`` (nested in the fraction)."""
    return labelled_order(n, seed, labels)[: n_labelled(n, fraction, min_labels)]
