"""Compare checkpoints (and random initialisation) on a list of tasks: one table.

Used by ``medssl evaluate``, the demo and the benchmarks. Every table gets a
random-initialisation row of the compared backbone, trained and scored the
same way as the pretrained ones.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import CheckpointError, ConfigError
from ..registry import TASKS
from ..normalisation import needs_conversion
from .data import EvalData, load_eval_data
from .inputs import describe_input
from .models import ModelSpec, baseline_for, resolve
from ..splits import describe_split_rule
from .tables import write_results
from .tasks import EvalSettings, primary_metric


def _version() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        __version__ = "unknown"
    try:
        from ..checkpoint import git_hash

        h = git_hash()
    except ImportError:  # pragma: no cover
        h = None
    return f"{__version__} ({h[:10]})" if h else str(__version__)


def check_fits(model: ModelSpec, data: EvalData) -> None:
    """Raise :class:`CheckpointError` when the model cannot read the data (dims, channels, intensity scaling)."""
    if model.spatial_dims != data.spatial_dims:
        raise CheckpointError(f"{model.name}: a {model.spatial_dims}D encoder does not fit {data.spatial_dims}D data ({data.source})")
    ch = model.channels()
    if ch != 1 and not model.repeat_grey:
        raise CheckpointError(f"{model.name}: expects {ch} input channels; the cache holds single-channel images")
    if model.normalisation:
        try:
            needs_conversion(data.cache_spec(), model.input_spec(data.cache_spec()))
        except ValueError as exc:
            raise CheckpointError(f"{model.name}: {exc} ({data.source})") from None


def fit_to_data(model: ModelSpec, data: EvalData) -> ModelSpec:
    """``model`` on the path of ``data``'s dims when its backbone runs them (a two-path MiT on X-rays), else as is."""
    if model.spatial_dims != data.spatial_dims and data.spatial_dims in model.dims_supported():
        return model.with_dims(data.spatial_dims)
    return model


def describe_inputs(models: Sequence[ModelSpec], data: EvalData) -> str:
    """The results-header line: what each model was fed."""
    try:
        cache = data.cache_spec()
    except Exception:  # mixed scalings were already refused by check_fits where they matter
        cache = None
    parts = []
    for m in models:
        dims = f"{m.spatial_dims}D" + (f", grey x{m.channels()}" if m.channels() != 1 else "")
        parts.append(f"{m.name}: {describe_input(m.input_spec(cache), cache)} ({dims})")
    return "; ".join(parts)


def _twin_key(m: ModelSpec) -> tuple:
    """What a random-init twin must share with a checkpoint: backbone, arguments, patch, dims, inputs."""
    import json

    return (m.backbone_name, json.dumps(m.backbone_kwargs, sort_keys=True, default=str), tuple(m.patch_size),
            int(m.spatial_dims), json.dumps(m.normalisation, sort_keys=True, default=str))


def with_twins(models: List[ModelSpec], *, add_random_baseline: bool = True) -> tuple:
    """``(models, twins)``: every pretrained model gets a random-init twin of its own backbone and settings.

    A random-init model already in ``models`` with the same backbone,
    arguments, patch size, dims and normalisation is reused; otherwise one is
    added (``random-init``, or ``random-init (<model>)`` when several are
    needed). A model named ``<full>-<ablation>`` next to a model named
    ``<full>`` is compared with the full method instead.
    """
    names = {m.name for m in models}
    partner: Dict[str, Any] = {}  # model name -> twin ModelSpec or full-method name
    randoms = [m for m in models if not m.pretrained]
    added: List[ModelSpec] = []
    owners: Dict[int, str] = {}
    for m in [m for m in models if m.pretrained]:
        full = m.name.split("-")[0]
        if "-" in m.name and full in names:
            partner[m.name] = full
            continue
        match = next((r for r in randoms + added if _twin_key(r) == _twin_key(m)), None)
        if match is None:
            if not add_random_baseline:
                continue
            match = baseline_for(m)
            added.append(match)
            owners[id(match)] = m.name
        partner[m.name] = match
    taken = {r.name for r in randoms}
    for a in added:
        a.name = "random-init" if len(added) == 1 and "random-init" not in taken else f"random-init ({owners[id(a)]})"
    twins = {k: (v if isinstance(v, str) else v.name) for k, v in partner.items()}
    return models + added, twins


def split_task(task: str) -> Tuple[str, Optional[str]]:
    """``"regression:lung_function"`` -> ``("regression", "lung_function")``; ``"segmentation"`` -> ``(.., None)``.

    A task may name its target after a colon, so one evaluation runs several
    targets and computes each model's frozen features once for all of them.
    """
    name, sep, target = str(task).partition(":")
    if sep and not target:
        raise ConfigError(f"task={task}", "a target after ':' is empty (e.g. regression:lung_function)")
    return name, (target or None)


def evaluate_models(
    models: Sequence[ModelSpec],
    tasks: Sequence[str],
    data: EvalData,
    settings: EvalSettings,
    *,
    out: str | Path,
    command: Optional[str] = None,
    add_random_baseline: bool = True,
) -> Dict[str, Any]:
    """Run ``tasks`` for every model (plus the random-init baseline) and write the tables to ``out``."""
    if not models:
        raise ValueError("models: nothing to evaluate")
    for t in tasks:
        TASKS.get(split_task(t)[0])  # unknown task -> ConfigError naming it
    models, twins = with_twins(list(models), add_random_baseline=add_random_baseline)
    models = [fit_to_data(m, data) for m in models]
    for m in models:
        check_fits(m, data)
    t0 = time.time()
    rows: List[Dict[str, Any]] = []
    for task in tasks:
        name, target = split_task(task)
        run = settings if target is None else dataclasses.replace(settings, target=target)
        for m in models:
            rows += TASKS.get(name)(m, data, run)
    wall = time.time() - t0
    header = {
        "split rule": describe_split_rule(settings.split_rule, settings.train_share),
        "cases": f"{len(data.ids)} from {data.source}",
        "seeds": ", ".join(str(s) for s in settings.seeds),
        "label fraction": ", ".join(f"{f:.0%}" for f in (settings.fractions if "label_efficiency" in tasks else [settings.label_fraction])),
        "models": ", ".join(f"{m.name} ({'pretrained' if m.pretrained else 'random init'}, {m.backbone_name}, patch {list(m.patch_size)})" for m in models),
        "input normalisation": describe_inputs(models, data),
        "command": command or " ".join(sys.argv),
        "medssl": _version(),
        "machine": f"{platform.node() or 'unknown'}, {platform.machine()}, {settings.device}",
        "wall-clock": f"{wall:.1f} s",
    }
    if twins:
        header["paired comparisons"] = "; ".join(f"{a} vs {b}" for a, b in twins.items())
    primary = {r["task"]: primary_metric(r["task"]) for r in rows}
    result = write_results(rows, out, header=header, primary=primary, twins=twins, n_boot=max(200, settings.n_boot))
    result["rows"] = rows
    return result


def compare(
    checkpoints: Mapping[str, Optional[str | Path]],
    tasks: Sequence[str],
    manifest: str | Path,
    cache: Optional[str | Path],
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    label_fraction: float = 0.1,
    budget: Optional[Mapping[str, Any]] = None,
    target: Optional[str] = None,
    settings: Optional[EvalSettings] = None,
    spatial_dims: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Evaluate named checkpoints on ``tasks``; returns the summary rows (also written to ``out``).

    ``checkpoints``: ``{name: path}``; a ``None`` path (or ``"random:<backbone>"``)
    is the random initialisation of the first checkpoint's backbone. ``budget``
    overrides fine-tuning settings (``seg_<field>`` of
    :class:`~medssl.eval.segmentation.SegFinetuneConfig`, ``cls_<field>`` of
    the classification config) and other :class:`EvalSettings` fields:
    ``{"seg_steps": 100, "cls_steps": 50, "finetune_classification": False}``. ``spatial_dims``: evaluate on X-rays
    (2) or volumes (3) of the manifest; default the first checkpoint's dims,
    or the other kind when the manifest holds only that. A checkpoint whose
    backbone runs both (UniMiSS's MiT) is fed on the path of the data.
    """
    s = settings or EvalSettings()
    s.seeds, s.label_fraction = tuple(int(x) for x in seeds), float(label_fraction)
    if target is not None:
        s.target = target
    for key, val in (budget or {}).items():
        group, _, field_name = key.partition("_")
        sub = {"seg": s.seg, "cls": s.cls}.get(group)
        if sub is not None and hasattr(sub, field_name):  # seg_steps, seg_overlap, seg_max_patch_voxels, cls_steps, ...
            setattr(sub, field_name, type(getattr(sub, field_name))(val))
        elif hasattr(s, key):
            setattr(s, key, val)
        else:
            raise ConfigError(f"budget.{key}", "unknown budget key (seg_<SegFinetuneConfig field>, cls_<ClsFinetuneConfig "
                                               "field> or an EvalSettings field)")
    named = [(n, p) for n, p in checkpoints.items() if p is not None]
    models = [resolve(p, name=n) for n, p in named]
    if not models:
        raise ValueError("checkpoints: at least one checkpoint path or 'random:<backbone>' is needed")
    for n, p in checkpoints.items():
        if p is None:
            base = baseline_for(models[0])
            base.name = n
            models.append(base)
    strict = spatial_dims is not None
    data = load_eval_data(manifest, cache=cache, out=out, spatial_dims=spatial_dims or models[0].spatial_dims, strict=strict)
    return evaluate_models(models, tasks, data, s, out=out)["summary"]
