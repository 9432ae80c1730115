"""The demo: the whole flow on the embedded synthetic cohort, in minutes on a laptop CPU.

synthetic cohort (CT + X-rays + reports) -> preprocess -> short pretraining of
each method at its tiny preset, all under the same wall-clock budget ->
evaluation against random initialisation at 10 % labels over 3 seeds -> one
table (Markdown + CSV) and plots.

Each stage names a preset in ``configs/`` and the evaluation tasks that fit
the method. A stage that fails is reported in the table and the others go
on; the command then exits non-zero.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Eval:
    """Tasks run on one kind of data: ``spatial_dims`` 3 (volumes) or 2 (X-rays)."""

    tasks: Sequence[str]
    target: Optional[str] = None
    spatial_dims: Optional[int] = None
    budget: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """One pretraining run: a preset with overrides, and its evaluations.

    Stages with the same ``group`` (same backbone) are evaluated in one table
    with one random-initialisation row.
    """

    name: str
    preset: str
    evals: Sequence[Eval] = ()
    overrides: Sequence[str] = ()
    group: Optional[str] = None


#: Frozen-feature protocols only (linear probe and kNN): cheap enough for every method.
FROZEN = {"finetune_classification": False}
SEVERITY = Eval(("classification",), "severity", 3, FROZEN)
#: A short segmentation fine-tune for the demo (one seed, 60 steps, a smaller data-sized patch): about a minute on
#: two cores. It shows the flow and the paired delta; the calibrated harness (800 steps) is benchmarks/protocol.py's.
DEMO_SEG = {"seg_steps": 60, "seg_overlap": 0.0, "seg_max_patch_voxels": 48 * 48 * 64, "seeds": (0,)}

DEMO_NOTE = ("Segmentation here is a short fine-tune (seed 0, 60 steps) that shows the flow; the calibrated harness "
             "(800 steps, docs/benchmarks.md) is what benchmarks/protocol.py runs.")

STAGES: List[Stage] = [
    Stage("simclr", "simclr_tiny", (Eval(("segmentation",), None, 3, DEMO_SEG), SEVERITY)),
    Stage("unimiss_plus", "unimiss_plus_tiny", (SEVERITY, Eval(("classification",), "consolidation", 2, FROZEN))),
    Stage("drasclr", "drasclr_tiny", (Eval(("patient_classification",), "severity"),)),
    Stage("iicc", "iicc_tiny", (SEVERITY,)),
    Stage("t3d", "t3d_tiny", (Eval(("report_retrieval", "zero_shot")),)),
]


def preset_path(name: str) -> Path:
    """``configs/<name>.yaml`` of the source tree (presets are plain files, not code)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        from .errors import ConfigError

        raise ConfigError("preset", f"{path} not found")
    return path


@dataclass
class DemoSettings:
    out: Path
    n: int = 32
    seed: int = 0
    preset: str = "default"
    budget_s: float = 30.0
    spacing: Sequence[float] = (4.0, 4.0, 4.0)
    seeds: Sequence[int] = (0, 1, 2)
    label_fraction: float = 0.1
    methods: Optional[Sequence[str]] = None
    workers: int = 0
    max_steps: Optional[int] = None  # a fixed number of pretraining steps instead of the wall-clock budget
    note: Optional[str] = None  # the table's note on the evaluation (None: the demo's)


def _pretrain(stage: Stage, s: DemoSettings, manifest: Path, cache: Path, log: Callable[[str], None]) -> Path:
    from .config import check_components, load_config
    from .train.trainer import fit

    run_dir = s.out / "runs" / stage.name
    overrides = [
        f"data.manifest={manifest}",
        f"data.cache={cache}",
        f"run_dir={run_dir}",
        f"seed={s.seed}",
        *((f"trainer.time_budget_s={s.budget_s}", "trainer.max_steps=100000") if s.max_steps is None else
          ("trainer.time_budget_s=null", f"trainer.max_steps={int(s.max_steps)}")),
        f"data.num_workers={s.workers}",
        *stage.overrides,
    ]
    cfg = load_config(preset_path(stage.preset), overrides)
    check_components(cfg)
    summary = fit(cfg)
    log(f"  {stage.name}: {summary['steps_done']} steps, {summary['samples_seen']} samples, "
        f"{summary['parameters'] / 1e6:.2f}M parameters, {summary['wall_clock_s']:.0f} s")
    ckpt = run_dir / "checkpoints" / "final.safetensors"
    (s.out / "runs" / stage.name / "demo_summary.json").write_text(json.dumps(summary))
    return ckpt


def _evaluate(group: str, stages: Sequence[Stage], ckpts: Dict[str, Path], s: DemoSettings, manifest: Path,
              cache: Path) -> List[Dict[str, Any]]:
    """Every evaluation of a group's stages, with one random-initialisation row per table."""
    from .eval.compare import compare

    rows: List[Dict[str, Any]] = []
    for k, ev in enumerate(stages[0].evals):
        models: Dict[str, Optional[Path]] = {st.name: ckpts[st.name] for st in stages}
        models["random init"] = None
        out = s.out / "eval" / group / f"{k}-{'-'.join(ev.tasks)}".replace(":", "_")
        got = compare(models, list(ev.tasks), manifest, cache, out, seeds=s.seeds, label_fraction=s.label_fraction,
                      budget=dict(ev.budget), target=ev.target, spatial_dims=ev.spatial_dims)
        rows += [dict(r, stage=group, data="X-rays" if ev.spatial_dims == 2 else "volumes") for r in got]
    return rows


def _budget_text(s: DemoSettings) -> str:
    return f"{s.budget_s:.0f} s" if s.max_steps is None else f"{int(s.max_steps)} steps"


def _table(rows: List[Dict[str, Any]], failures: Dict[str, str], s: DemoSettings, wall: float) -> str:
    lines = [
        "# medssl demo results",
        "",
        f"Synthetic cohort: {s.n} patients ({s.preset} preset, seed {s.seed}), preprocessed at "
        f"{'x'.join(f'{v:g}' for v in s.spacing)} mm; pretraining "
        f"{_budget_text(s)} per method; {s.label_fraction:.0%} of the train labels; seeds "
        f"{', '.join(map(str, s.seeds))}; total wall-clock {wall / 60:.1f} min.",
        "Each method is compared with a random initialisation of the same backbone, trained the same way. "
        + (DEMO_NOTE if s.note is None else s.note),
        "",
        "Delta: the paired difference from the random-init twin (or, for an ablation, the full method) on the "
        "same test patients and seeds, with its 95 % bootstrap CI over test patients; verdict from the CI.",
        "",
        "| method | model | data | task | protocol | target | metric | mean ± sd | delta [95 % CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    from .eval.tables import fmt_ci, one_class_flag
    from .eval.tasks import primary_metric

    def fmt(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{v:.3f}"

    for r in rows:
        metric = primary_metric(str(r.get("task", "")))
        ci = fmt_ci(r)
        lines.append(f"| {r['stage']} | {r.get('model', '')}{one_class_flag(r)} | {r.get('data', '')} | {r.get('task', '')} | "
                     f"{r.get('protocol', '')} | {r.get('target', '')} | {metric} | {fmt(r.get(metric + '_mean'))} ± "
                     f"{fmt(r.get(metric + '_sd'))} | {ci} | {r.get('verdict', '') if ci else ''} |")
    for name, why in failures.items():
        lines.append(f"| {name} | failed | | | | | {why} | | | |")
    return "\n".join(lines) + "\n"


def _cohort(s: DemoSettings, log: Callable[[str], None]) -> tuple:
    """The cohort and its cache under ``out/cohort`` (reused when it was made with the same settings)."""
    from .preprocess import preprocess_manifest
    from .synth import generate_cohort

    root = s.out / "cohort"
    manifest = root / "manifest.jsonl"
    gen = {}
    if (root / "dataset.json").is_file():
        gen = json.loads((root / "dataset.json").read_text()).get("generator", {})
    if manifest.is_file() and gen.get("n") == s.n and gen.get("seed") == s.seed and \
            gen.get("preset", {}).get("name") == s.preset:
        log(f"[1/3] synthetic cohort: reusing {root}")
    else:
        log(f"[1/3] synthetic cohort: {s.n} patients ({s.preset})")
        manifest = generate_cohort(root, n=s.n, seed=s.seed, preset=s.preset, xrays=True, n_unpaired=s.n,
                                   progress=True)
    cache = root / "cache"
    log(f"[2/3] preprocessing at {'x'.join(f'{v:g}' for v in s.spacing)} mm")
    preprocess_manifest(manifest, cache, spacing=list(s.spacing), progress=True)
    log(summarise_cache(cache))
    return manifest, cache


def summarise_cache(cache_dir: Path) -> str:
    """A few lines about the cohort in the cache: cases, shapes, spacing, the severity classes."""
    from collections import Counter

    from .preprocess import Cache

    cache = Cache(cache_dir)
    cts, xrays = cache.select(modality="ct"), cache.select(modality="xray")
    shapes = [tuple(cache.meta(c)["shape"]) for c in cts]
    severity = Counter(cache.meta(c).get("manifest_meta", {}).get("severity") for c in cts)
    spacing = [round(float(v), 2) for v in cache.meta(cts[0])["spacing"]] if cts else None
    return (f"  cache {cache_dir}: {len(cts)} CT volumes (Z, Y, X from {min(shapes)} to {max(shapes)}, spacing "
            f"{spacing} mm), {len(xrays)} X-rays; severity classes {dict(sorted(severity.items()))}")


def save_preview(cache_dir: Path, out: Path) -> Path:
    """A look at the data: three slices of the first CT with the organ labels over them, and an X-ray."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .preprocess import Cache

    cache = Cache(cache_dir)
    ct = cache.select(modality="ct")[0]
    img, lab = np.asarray(cache.image(ct), np.float32), cache.label(ct)
    xrays = cache.select(modality="xray")
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    z, y, x = (int(v) // 2 for v in img.shape)
    planes = [(img[z], None if lab is None else lab[z], "axial"), (img[:, y], None if lab is None else lab[:, y], "coronal"),
              (img[:, :, x], None if lab is None else lab[:, :, x], "sagittal")]
    for ax, (im, lb, name) in zip(axes, planes):
        ax.imshow(im, cmap="gray", origin="lower" if name != "axial" else "upper", vmin=0.0, vmax=0.35)
        if lb is not None:
            ax.imshow(np.ma.masked_equal(lb, 0), cmap="tab10", alpha=0.35, interpolation="nearest",
                      origin="lower" if name != "axial" else "upper")
        ax.set_title(f"{ct} {name} + organ labels", fontsize=9)
        ax.axis("off")
    if xrays:
        axes[3].imshow(np.asarray(cache.image(xrays[0]), np.float32), cmap="gray")
        axes[3].set_title(f"{xrays[0]} (rendered X-ray)", fontsize=9)
    axes[3].axis("off")
    fig.tight_layout()
    path = out / "preview.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_demo(s: DemoSettings, log: Callable[[str], None] = print,
             stages: Optional[Sequence[Stage]] = None) -> Dict[str, Any]:
    """Run every stage; returns ``{"rows", "failures", "table"}`` and writes ``out/results.md``."""
    t0 = time.time()
    s.out.mkdir(parents=True, exist_ok=True)
    stages = [st for st in (STAGES if stages is None else stages) if s.methods is None or st.name in s.methods]
    manifest, cache = _cohort(s, log)
    log(f"  cohort preview: {save_preview(cache, s.out)}")
    log(f"[3/3] pretraining {len(stages)} method(s), {_budget_text(s)} each, then evaluation")
    rows: List[Dict[str, Any]] = []
    failures: Dict[str, str] = {}

    def failed(name: str, exc: Exception) -> None:  # one method's failure must not hide the others' results
        failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        (s.out / f"{name}_error.txt").write_text(traceback.format_exc())
        log(f"  {name} FAILED: {failures[name]} (details in {s.out / (name + '_error.txt')})")

    groups: Dict[str, List[Stage]] = {}
    for stage in stages:
        groups.setdefault(stage.group or stage.name, []).append(stage)
    for group, members in groups.items():
        ckpts: Dict[str, Path] = {}
        for stage in members:
            try:
                ckpts[stage.name] = _pretrain(stage, s, manifest, cache, log)
            except Exception as exc:
                failed(stage.name, exc)
        done = [st for st in members if st.name in ckpts]
        if done:
            try:
                rows += _evaluate(group, done, ckpts, s, manifest, cache)
            except Exception as exc:
                failed(group, exc)
    wall = time.time() - t0
    table = _table(rows, failures, s, wall)
    (s.out / "results.md").write_text(table)
    if any(r.get("verdict") for r in rows):
        from .eval.tables import forest_plot

        named = [dict(r, model=f"{r['stage']}: {r['model']}") for r in rows]
        log(f"  forest plot of the deltas: {forest_plot(named, s.out / 'forest.png')}")
    (s.out / "results.json").write_text(json.dumps({"rows": rows, "failures": failures}, indent=1, default=str))
    return {"rows": rows, "failures": failures, "table": table}
