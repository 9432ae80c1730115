"""``preprocess_manifest``: fingerprint a dataset and fill a cache, in parallel and in shards.

Cache layout (docs/cache.md)::

    CACHE/fingerprint.json   dataset fingerprint (spacings, sizes, intensities)
    CACHE/plan.json          preprocessing settings
    CACHE/cases/<id>/        image.npy, label.npy, fg_coords.npy, meta.json
    CACHE/index.jsonl        one record per finished case of the manifest
    CACHE/skipped.json       cases left out by skip_bad, with the reason
    CACHE/inputs.json        the manifest the cache is built from (path, SHA-256, case ids)

A finished case is redone when its inputs changed (medssl.preprocess.sources);
cases skipped as bad are tried again on every run.
"""

from __future__ import annotations

import json
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, DataError
from ..io.atomic import write_json_atomic, write_text_atomic
from ..io.jsonfile import read_json
from ..io.outputs import check_output_folder
from .cache import REBUILD, case_record
from .fingerprint import case_fingerprint, combine, target_spacing
from .inputs import load_cases
from .intensity import DEFAULT_CT_WINDOW, check_window
from .process import Plan, drop_case, is_finished, process_case, remove_stale_tmp
from .sources import stale_reason


@dataclass
class PreprocessReport:
    """What a run did: cases written, cases found finished, cases skipped (with reasons)."""

    out: Path
    processed: List[str] = field(default_factory=list)
    reused: List[str] = field(default_factory=list)
    redone: Dict[str, str] = field(default_factory=dict)  # id -> why (inputs changed); also in processed
    skipped: List[Dict[str, str]] = field(default_factory=list)
    plan: Dict[str, Any] = field(default_factory=dict)
    fingerprint: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        redone = f" ({len(self.redone)} redone: inputs changed)" if self.redone else ""
        lines = [f"cache {self.out}: {len(self.processed)} written{redone}, {len(self.reused)} already there, "
                 f"{len(self.skipped)} skipped; spacing {self.plan.get('spacing')} mm"]
        lines += [f"  redone {cid}: {why}" for cid, why in self.redone.items()]
        lines += [f"  skipped {s['id']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def parse_shard(shard: Union[str, Sequence[int]]) -> Tuple[int, int]:
    """``"i/N"`` or ``(i, N)`` -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(v) for v in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise ValueError(f"shard: expected i/N, got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard: need 0 <= i < N, got {i}/{n}")
    return i, n


def _run(fn: Callable, items: List[Any], *, workers: int, progress: bool, desc: str, kwargs: Dict[str, Any]):
    """Yield (item, result or DataError) for each item, in completion order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, disable=not progress or not items, file=sys.stderr, leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                try:
                    yield item, fn(item, **kwargs)
                except DataError as exc:
                    yield item, exc
                bar.update(1)
            return
        # fork where the platform has it (as DataLoader does): scripts need no __main__ guard
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=get_context(method))
        try:
            futures = {pool.submit(fn, item, **kwargs): item for item in items}
            for fut in as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except DataError as exc:
                    yield futures[fut], exc
                bar.update(1)
        finally:  # a raised error stops the queue; running cases finish (atomically)
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _skip(case: Any, exc: DataError) -> Dict[str, str]:
    return {"id": str(case.id), "path": str(exc.path) if exc.path else str(case.image), "reason": exc.problem}


def _fingerprint(cases: List[Any], out: Path, *, workers: int, skip_bad: bool, progress: bool,
                 skipped: Dict[str, Dict[str, str]]) -> Dict[str, Any]:
    key = [[str(c.id), str(c.image), str(c.label) if c.label else None] for c in cases]
    path = out / "fingerprint.json"
    if path.is_file():
        old = read_json(path, hint="delete it to have it computed again")
        if old.get("manifest_key") == key:
            retry = _retry_skipped(cases, old, workers=workers, skip_bad=skip_bad, progress=progress)
            if retry is not None:  # still bad (or none skipped): the fingerprint stands
                skipped.update(retry)
                if [s.get("reason") for s in old.get("skipped", [])] != [s["reason"] for s in retry.values()]:
                    old["skipped"] = list(retry.values())
                    write_json_atomic(path, old)
                return old
    per_case = []
    with closing(_run(case_fingerprint, cases, workers=workers, progress=progress, desc="fingerprint",
                      kwargs={})) as results:
        for case, res in results:
            if isinstance(res, DataError):
                if not skip_bad:
                    raise res
                skipped[str(case.id)] = _skip(case, res)
            else:
                per_case.append(res)
    order = {str(c.id): n for n, c in enumerate(cases)}
    fp = combine(sorted(per_case, key=lambda r: order[r["id"]]))
    fp["manifest_key"] = key
    fp["skipped"] = sorted(skipped.values(), key=lambda s: order.get(s["id"], 0))
    write_json_atomic(path, fp)
    return fp


def _retry_skipped(cases: List[Any], old: Dict[str, Any], *, workers: int, skip_bad: bool,
                   progress: bool) -> Optional[Dict[str, Dict[str, str]]]:
    """Try the cases an earlier fingerprint left out again.

    Returns their skip entries when every one still fails (the old
    fingerprint stands), ``None`` when one of them now reads (the
    fingerprint is computed again with it). Without ``skip_bad`` a case
    that still fails raises its error: an earlier ``--skip-bad`` never
    makes a later run skip silently.
    """
    listed = old.get("skipped", [])
    ids = {s.get("id") for s in listed if isinstance(s, dict)}
    again = [c for c in cases if str(c.id) in ids]
    if not again:
        return {}
    still: Dict[str, Dict[str, str]] = {}
    with closing(_run(case_fingerprint, again, workers=workers, progress=progress, desc="fingerprint (retry)",
                      kwargs={})) as results:
        for case, res in results:
            if not isinstance(res, DataError):
                return None
            if not skip_bad:
                raise res
            still[str(case.id)] = _skip(case, res)
    order = {str(c.id): n for n, c in enumerate(cases)}
    return dict(sorted(still.items(), key=lambda kv: order.get(kv[0], 0)))


def manifest_record(manifest: Any, cases: List[Any]) -> Dict[str, Any]:
    """What ``inputs.json`` records: the manifest file (path, SHA-256), its case ids and their files."""
    rec: Dict[str, Any] = {"manifest": None, "sha256": None, "ids": [str(c.id) for c in cases],
                           "files": {str(c.id): [str(c.image), str(c.label) if getattr(c, "label", None) else None]
                                     for c in cases}}
    if isinstance(manifest, (str, Path)):
        from .sources import file_hash

        rec["manifest"] = str(Path(manifest).resolve())
        rec["sha256"] = file_hash(Path(manifest))
    return rec


def _check_manifest_record(out: Path, manifest: Any, cases: List[Any]) -> Dict[str, Any]:
    """The manifest this cache is built from (``inputs.json``); refuses another one, naming both."""
    rec = manifest_record(manifest, cases)
    path = out / "inputs.json"
    if path.is_file():
        check_same_manifest(path, read_json(path, hint="delete it (or the cache) and run again"), rec, "--out")
    return rec


def check_same_manifest(path: Path, old: Dict[str, Any], new: Dict[str, Any], key: str) -> None:
    """Raise :class:`ConfigError` (``key``) when the cache's ``inputs.json`` (``old``) names another manifest.

    The same manifest file may have changed (cases added or removed). A
    manifest file elsewhere is the same when its content is, or when it
    shares cases with the cache and every shared case names the same image
    and label files (a copy with other splits, pairs or meta; cases the
    cache lacks make it partial, which the caller decides about).
    """
    was, now = old.get("manifest"), new.get("manifest")
    if not isinstance(was, (str, type(None))) or not isinstance(old.get("files", {}), dict):
        raise DataError(path, "not a medssl inputs record ('manifest' must be a path, 'files' an object); "
                        "delete it and run `medssl preprocess` again")
    if was is None or now is None or was == now or (old.get("sha256") and old.get("sha256") == new.get("sha256")):
        return
    files = old.get("files")
    detail = ""
    if isinstance(files, dict):
        shared = [i for i in new["ids"] if i in files]
        changed = [i for i in shared if list(files[i] or []) != list(new["files"][i])]
        if shared and not changed:
            return
        detail = (" (no case in common)" if not shared else
                  f" (case {changed[0]!r} names other files: {new['files'][changed[0]][0]} where the cache has "
                  f"{files[changed[0]][0]})")
    raise ConfigError(key, f"the cache {path.parent} was built from the manifest {was} ({path}), not from {now}"
                      f"{detail}; use another cache folder for this manifest, or delete the cache")


def dataset_classes(manifest: Any) -> Optional[Dict[str, Any]]:
    """The label values declared by a ``dataset.json`` next to the manifest (``{"values", "source"}``), if any."""
    if not isinstance(manifest, (str, Path)):
        return None
    path = Path(manifest).parent / "dataset.json"
    if not path.is_file():
        return None
    from ..io.layouts import declared_labels
    from .process import declared_values

    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{path}: not readable JSON ({exc}); its label classes are not checked")
        return None
    if not isinstance(info, dict):
        return None
    values = declared_values(declared_labels(info, path))
    return {"values": values, "source": str(path)} if values else None


def _input_paths(cases: List[Any]) -> List[Path]:
    """The files (and DICOM series folders) the cases are read from."""
    paths = []
    for c in cases:
        for key in ("image", "label", "report"):
            value = getattr(c, key, None)
            if isinstance(value, (str, Path)):
                paths.append(Path(value))
    return paths


def write_index(out: Path, order: Iterable[str]) -> List[Dict[str, Any]]:
    """Rewrite ``index.jsonl`` from the finished case folders of the manifest's cases ``order`` (in that order).

    Folders of cases the manifest no longer lists stay on disk but out of the index.
    """
    cases_dir = out / "cases"
    rank = {cid: n for n, cid in enumerate(order)}
    done = sorted(p.name for p in cases_dir.iterdir() if not p.name.startswith(".") and p.name in rank
                  and (p / "meta.json").is_file()) if cases_dir.is_dir() else []
    done.sort(key=lambda cid: (rank.get(cid, len(rank)), cid))
    records = [case_record(cases_dir / cid / "meta.json") for cid in done]
    write_text_atomic(out / "index.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return records


def preprocess_manifest(
    manifest: Union[str, Path, Sequence[Any]],
    out: Union[str, Path],
    *,
    spacing: Optional[Sequence[float]] = None,
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
    workers: int = 1,
    shard: Union[str, Sequence[int]] = (0, 1),
    skip_bad: bool = False,
    progress: bool = True,
    image_order: int = 1,
    crop_margin_mm: float = 10.0,
    xray_size: Optional[Sequence[int]] = None,
) -> PreprocessReport:
    """Preprocess every case of ``manifest`` (a JSONL path or a list of cases) into the cache ``out``.

    ``spacing`` is the target voxel size (x, y, z mm); ``None`` takes the
    fingerprint's median spacing. ``ct_window`` (HU) maps to [0, 1].
    ``workers`` processes work in parallel; ``shard=(i, N)`` (or ``"i/N"``)
    takes every N-th case starting at i. Cases already in the cache are
    skipped. A bad case raises :class:`DataError` naming its file, or with
    ``skip_bad`` is listed in ``skipped.json`` and left out (no partial
    folder is ever left behind). ``image_order``: 1 linear, 3 B-spline.
    ``xray_size``: (H, W) to resize X-rays to, or ``None`` to keep them.
    """
    if int(workers) < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    if image_order not in (1, 3):
        raise ValueError(f"image_order: 1 (linear) or 3 (B-spline), got {image_order}")
    if crop_margin_mm < 0:
        raise ValueError(f"crop_margin_mm: must be >= 0, got {crop_margin_mm}")
    if xray_size is not None and (len(xray_size) != 2 or min(int(v) for v in xray_size) < 1):
        raise ValueError(f"xray_size: (H, W) positive integers expected, got {xray_size}")
    lo, hi = check_window(ct_window)
    index, n_shards = parse_shard(shard)
    out = Path(out)
    check_output_folder("--out", out, [manifest] if isinstance(manifest, (str, Path)) else [])
    cases = load_cases(manifest, check_files=not skip_bad)
    check_output_folder("--out", out, _input_paths(cases))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "inputs.json", _check_manifest_record(out, manifest, cases))
    skipped: Dict[str, Dict[str, str]] = {}
    fp = _fingerprint(cases, out, workers=int(workers), skip_bad=skip_bad, progress=progress, skipped=skipped)
    plan_path = out / "plan.json"
    old = None
    if plan_path.is_file():
        old = Plan.from_json(read_json(plan_path, hint="use a new --out folder or delete the cache"), plan_path)
    if spacing is None and old is not None:  # an existing cache keeps its grid (its cases are on it)
        chosen, source = list(old.spacing), old.spacing_source
    else:
        chosen, source = target_spacing(fp, spacing), "given" if spacing is not None else "fingerprint median"
    plan = Plan(spacing=chosen, ct_window=[lo, hi], image_order=image_order,
                crop_margin_mm=float(crop_margin_mm), xray_size=None if xray_size is None else [int(v) for v in xray_size],
                spacing_source=source)
    if old is not None:
        if not old.same_output(plan):
            raise ConfigError("preprocess", f"{out} was built with other settings ({plan_path}: {old.to_json()}); "
                              "use a new --out folder or delete the cache")
    else:
        write_json_atomic(plan_path, plan.to_json())
    report = PreprocessReport(out=out, plan=plan.to_json(), fingerprint=fp)
    mine = [c for n, c in enumerate(cases) if n % n_shards == index]
    cases_dir = out / "cases"
    classes = dataset_classes(manifest)
    todo = []
    for c in mine:
        if is_finished(cases_dir, str(c.id)):
            meta_path = cases_dir / str(c.id) / "meta.json"
            case_record(meta_path)  # a damaged meta.json is named, not silently replaced
            why = stale_reason(c, read_json(meta_path, hint=REBUILD), classes)
            if why is None:
                report.reused.append(str(c.id))
                continue
            report.redone[str(c.id)] = why
            todo.append(c)
        elif str(c.id) not in skipped:  # skipped: failed again in this run's fingerprint
            todo.append(c)
    remove_stale_tmp(cases_dir, [str(c.id) for c in todo])
    try:
        with closing(_run(process_case, todo, workers=int(workers), progress=progress, desc="preprocess",
                          kwargs={"plan": plan, "cases_dir": cases_dir, "redo": sorted(report.redone),
                                  "classes": classes})) as results:
            for case, res in results:  # closing: an error stops the pool before it propagates
                if isinstance(res, DataError):
                    if str(case.id) in report.redone:  # its inputs changed and no longer read: the old case goes
                        drop_case(cases_dir, str(case.id))
                    if not skip_bad:
                        raise res
                    skipped[str(case.id)] = _skip(case, res)
                else:
                    report.processed.append(str(case.id))
    except BaseException:
        if report.redone:  # the index must not list a case folder that was removed
            write_index(out, [str(c.id) for c in cases])
        raise
    mine_ids = {str(c.id) for c in mine}
    report.skipped = [s for s in skipped.values() if s["id"] in mine_ids]
    _write_skipped(out, report.skipped, mine_ids)
    write_index(out, [str(c.id) for c in cases])
    return report


def _write_skipped(out: Path, mine: List[Dict[str, str]], mine_ids: set) -> None:
    """Merge this shard's skipped cases into ``skipped.json`` (other shards' entries stay)."""
    path = out / "skipped.json"
    old = read_json(path, list, hint="delete it; a rerun lists the bad cases again") if path.is_file() else []
    merged = [s for s in old if s["id"] not in mine_ids] + mine
    write_json_atomic(path, merged)
