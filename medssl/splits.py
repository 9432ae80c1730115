"""Which cases an evaluation sees, and the fixed train/test split of them.

Both the evaluation (:mod:`medssl.eval`) and the pretraining data that must
keep out of its test split (T3D's report source, :mod:`medssl.data.report_source`)
split through this module, so the two cannot disagree.

Cases (:func:`evaluated_cases`): the manifest records of one kind, CT/MR
volumes for a 3D evaluation or X-rays for a 2D one; records with ``split:
unpaired`` are for pretraining only and never evaluated.

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

The nested label-fraction subsets of the train split are the evaluation's
(:mod:`medssl.eval.splits`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from .errors import DataError

SPLIT_RULES = ("hash", "sorted", "manifest")
#: the modalities read as volumes (3D); every other one is a 2D image
VOLUME_MODALITIES = ("ct", "mr")


def evaluated_cases(cases: Sequence[Any], spatial_dims: Optional[int] = 3, *, strict: bool = False,
                    source: Union[str, Path] = "<manifest>", cache: Any = None) -> Tuple[List[Any], int]:
    """``(cases, dims)``: the manifest records (``load_cases``) a ``spatial_dims``-D evaluation sees, in manifest order.

    3: CT/MR volumes, 2: X-rays; records with ``split: unpaired`` never. A
    manifest without any case of that kind gives the other kind (and its
    dims) unless ``strict``; None: volumes when there are any, else X-rays.
    No case at all is a :class:`DataError` on ``source``; with ``cache`` (a
    :class:`~medssl.preprocess.cache.Cache`), so is a case it lacks.
    """
    # unpaired images are for pretraining only: never evaluated
    cases = [cs for cs in cases if getattr(cs, "split", None) != "unpaired"]
    have = {d: [cs for cs in cases if (cs.modality in VOLUME_MODALITIES) == (d == 3)] for d in (2, 3)}
    if spatial_dims is None:
        spatial_dims = 3 if have[3] else 2
    elif spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: 2 (X-rays) or 3 (CT/MR volumes), got {spatial_dims}")
    elif not have[spatial_dims] and not strict and have[5 - spatial_dims]:
        spatial_dims = 5 - spatial_dims
    wanted = have[spatial_dims]
    if not wanted:
        kind = "CT/MR volumes" if spatial_dims == 3 else "X-rays"
        raise DataError(source, f"no {kind} in the manifest for a {spatial_dims}D checkpoint")
    if cache is not None:
        absent = [cs.id for cs in wanted if cs.id not in cache]
        if absent:
            raise DataError(cache.path, f"{len(absent)} manifest cases are not in the cache (first: {absent[0]}); "
                                        "run `medssl preprocess`")
    return wanted, int(spatial_dims)


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


def split_cases(cases: Sequence[Any], *, rule: str = "hash", train_share: float = 0.75) -> Tuple[List[str], List[str]]:
    """:func:`train_test_split` of manifest records: their ids, with each record's ``split`` and its patient (``pair``)."""
    return train_test_split([str(cs.id) for cs in cases], rule=rule, train_share=train_share,
                            splits=[getattr(cs, "split", None) for cs in cases],
                            groups=[getattr(cs, "pair", None) for cs in cases])
