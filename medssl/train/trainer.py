"""The pretraining loop, top-down, on Lightning Fabric.

``fit(cfg)`` runs one pretraining job: CPU, one GPU, or many GPUs and nodes
(launched by torchrun or SLURM; Fabric reads the environment). The method
computes losses; everything else happens here, in this order, per optimiser
step ``step``::

    sched = schedule_values(step)                    # lr, wd, EMA momentum, teacher temp
    method.on_before_step(step, sched)
    snapshot the method's buffers
    for each of `accumulate` micro-batches:          # gradients synced on the last only
        out = method.training_step(batch); backward(out["loss"] / accumulate)
    if the loss is NaN/Inf on any rank:              # skip the update (warn; stop after max_bad_steps in a row)
        restore the buffers; drop deferred updates; method.on_skipped_step(step, sched)
    else:
        drop the gradients of method.frozen_parameters()
        clip gradients (trainer.grad_clip); optimiser step
        commit deferred updates                      # DINO / UniMiSS centre: once, all micro-batches
        method.on_after_step(step, sched)            # EMA teachers, queues
    log; checkpoint every N steps; stop at max_steps or the time budget

In the code, :func:`fit` reads top-down as named steps: :func:`_set_up`
(model, devices, data, optimiser; :func:`_restore` on resume), then per step
:func:`_one_step`, :func:`_log_step` and :func:`_checkpoint`, and at the end
:func:`_finish` (final probe, release checkpoint, summary). What they share
is one :class:`_Run`.

A skipped step leaves the method as it was: buffers that changed inside
``training_step`` (DINO centre, DeepCluster bank, batch-norm statistics)
are restored, and state kept outside buffers commits only in
``on_after_step``. Modules with deferred updates (``defer_updates`` /
``commit_pending`` / ``discard_pending``: the DINO loss that holds the DINO
and UniMiSS centre) sum them over the micro-batches of a step and apply
them once after the optimiser step, so under ``trainer.accumulate > 1``
the centre moves once per step with the accumulated batch's statistics,
as one large batch would move it. Under DDP the model is wrapped with
``find_unused_parameters=True`` only when the method says it needs it
(``method.ddp_find_unused_parameters``); see :mod:`medssl.methods.base`.

Resuming compares the config with the checkpoint's and refuses changed
hyper-parameters unless ``trainer.allow_config_change`` (see
:mod:`medssl.train.resume`).

The online kNN probe (:mod:`medssl.train.knn_probe`, ``eval.knn_every > 0``)
runs on rank 0 before the first step, whenever :func:`probe_due` says the
last probe has been paid for (at most ``eval.probe_share`` of the
wall-clock, at least ``eval.knn_every`` steps apart), and once after the
last step; a probe logged at step ``s`` saw the weights after ``s``
updates, the same weights as the loss of step ``s`` in ``metrics.csv``.
With a time budget, the run stops early enough for the final probe (its
last cost) to fit in the budget.

Randomness inside a step (masks, dropout) comes from the global RNGs, which
are re-seeded from ``(seed, step, rank)`` at the start of every step, so a
resumed step draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..config import RunConfig, config_to_dict, save_config
from ..errors import CheckpointError, ConfigError, MedsslError
from ..io.atomic import write_text_atomic
from ..runtime import tune_cpu_allocator
from .build import (build_method, build_source, cache_path, check_cache, check_view_sizes, data_meta, ensure_cache,
                    needs_cache)
from .data import StepBatchSampler, StepDataset, build_loader
from .knn_probe import collect_probe_set, knn_probe, probe_due
from .logging import RunLogger, write_curves
from .optim import apply_schedule, build_optimizer
from .resume import check_resume_config, segment_file, stale_segment_files
from .schedules import schedule_values
from .state import FORMAT, load_state, rng_state, save_state, set_rng_state

__all__ = ["fit", "DivergedError", "PRECISIONS"]

PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


class DivergedError(MedsslError, RuntimeError):
    """The loss was NaN/Inf for ``trainer.max_bad_steps`` optimiser steps in a row."""


def _seed_step(seed: int, step: int, rank: int) -> None:
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


# DDP strategy names and their process start method, for re-creating them with find_unused_parameters
_DDP_START = {"auto": "popen", "ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def _make_fabric(cfg: RunConfig, find_unused: bool = False) -> Any:
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    t = cfg.trainer
    if t.precision not in PRECISIONS:
        raise ConfigError("trainer.precision", f"'{t.precision}' is not one of 32, bf16-mixed, 16-mixed")
    kw = dict(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, precision=PRECISIONS[t.precision])
    fabric = Fabric(strategy=t.strategy, **kw)
    if find_unused and t.strategy in _DDP_START and type(fabric.strategy) is DDPStrategy:
        # the method leaves some trainable parameters out of some steps (method.ddp_find_unused_parameters)
        fabric = Fabric(strategy=DDPStrategy(start_method=_DDP_START[t.strategy], find_unused_parameters=True), **kw)
    return fabric


def _rank_zero_first(fabric: Any, fn: Any, others: bool = True) -> Any:
    """``fn()`` on rank 0, then (``others``) on the other ranks; an error of rank 0 stops every rank.

    The other ranks wait in a broadcast of rank 0's error (None when it
    succeeded) instead of a barrier, so a bad input fails the run everywhere
    with rank 0's message rather than leaving them waiting.
    """
    out, err = None, None
    if fabric.is_global_zero:
        try:
            out = fn()
        except Exception as exc:
            err = exc
    if fabric.world_size > 1:
        sent = err if err is None or isinstance(err, MedsslError) else RuntimeError(f"rank 0: {type(err).__name__}: {err}")
        received = fabric.broadcast(sent, src=0)
        if received is not None and not fabric.is_global_zero:
            raise received
    if err is not None:
        raise err
    if others and not fabric.is_global_zero:
        out = fn()
    return out


def _snapshot_buffers(method: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of every buffer, to undo what a skipped step changed."""
    return {name: b.detach().clone() for name, b in method.named_buffers()}


@torch.no_grad()
def _restore_buffers(method: torch.nn.Module, saved: Dict[str, torch.Tensor]) -> None:
    for name, value in saved.items():
        method.get_buffer(name).copy_(value)


def _deferring(method: torch.nn.Module) -> List[torch.nn.Module]:
    """Submodules whose per-batch state updates wait for the optimiser step (``defer_updates`` /
    ``commit_pending`` / ``discard_pending``, e.g. the DINO / UniMiSS centre): under gradient
    accumulation they then move once per step with the whole accumulated batch."""
    return [m for m in method.modules()
            if all(callable(getattr(m, a, None)) for a in ("defer_updates", "commit_pending", "discard_pending"))]


def _run_config(state: Dict[str, Any], run_dir: Path) -> Optional[Dict[str, Any]]:
    """The config the checkpoint was written with (``RUN/config.yaml`` for checkpoints that predate the record)."""
    if isinstance(state.get("config"), dict):
        return state["config"]
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("run_dir", f"{path}: cannot read the config of the run being resumed ({exc})") from None
    return raw if isinstance(raw, dict) else None


def _load_method_state(method: torch.nn.Module, state: Dict[str, Any], last: Path) -> None:
    """``method.load_state_dict`` with an error that names the keys that do not fit (another architecture)."""
    ckpt, own = state["method"], method.state_dict()
    missing = [k for k in own if k not in ckpt]
    unexpected = [k for k in ckpt if k not in own]
    shapes = [f"{k} {list(ckpt[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in ckpt and hasattr(ckpt[k], "shape") and tuple(ckpt[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)) if keys]
        raise CheckpointError(f"{last}: the checkpoint's weights do not fit the configured method and backbone "
                              f"({'; '.join(parts)}); resume with the run's own method/backbone settings or use another run_dir")
    method.load_state_dict(ckpt)


def _check(cfg: RunConfig) -> None:
    t = cfg.trainer
    for key, val, low in (("trainer.max_steps", t.max_steps, 1), ("trainer.accumulate", t.accumulate, 1), ("trainer.checkpoint_every", t.checkpoint_every, 1), ("trainer.max_bad_steps", t.max_bad_steps, 1), ("data.batch_size", cfg.data.batch_size, 1), ("trainer.log_every", t.log_every, 1)):
        if val < low:
            raise ConfigError(key, f"must be >= {low}, got {val}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        raise ConfigError("trainer.grad_clip", f"must be > 0 or null, got {t.grad_clip}")
    e = cfg.eval
    if e.knn_every < 0:
        raise ConfigError("eval.knn_every", f"must be >= 0 (0: no online probe), got {e.knn_every}")
    for key, val, low in (("eval.knn_k", e.knn_k, 1), ("eval.knn_max_cases", e.knn_max_cases, 4), ("eval.probe_chunk", e.probe_chunk, 1)):
        if val < low:
            raise ConfigError(key, f"must be >= {low}, got {val}")
    if not 0.0 < e.probe_share <= 1.0:
        raise ConfigError("eval.probe_share", f"must lie in (0, 1], got {e.probe_share}")


class _OnlineProbe:
    """The online kNN probe of a run (rank 0; the other ranks wait for it in the next collective)."""

    def __init__(self, cfg: RunConfig, source: Any, encoder: torch.nn.Module, logger: Optional[RunLogger]) -> None:
        self.ev, self.source, self.encoder, self.logger = cfg.eval, source, encoder, logger
        self.on = self.ev.knn_every > 0 and logger is not None
        self.set: Optional[Dict[str, Any]] = None
        self.s, self.count = 0.0, 0  # seconds and probes of this segment of the run
        self.last_s, self.last_step, self.t_end = 0.0, None, 0.0
        self.final: Optional[Dict[str, float]] = None

    def due(self, step: int) -> bool:
        """Before ``step``: the first probe, or :func:`probe_due` says the last one has been paid for."""
        return self.on and (self.last_step is None or probe_due(
            steps_since=step - self.last_step, train_s_since=time.time() - self.t_end,
            last_probe_s=self.last_s, share=self.ev.probe_share, min_every=self.ev.knn_every))

    def run(self, step_tag: int) -> None:
        ev = self.ev
        if self.set is None:  # collected once, on the first probe; counted in probe_s, not in the schedule
            t_c = time.time()
            self.set = collect_probe_set(self.source, label_key=ev.knn_label, max_cases=ev.knn_max_cases)
            self.s += time.time() - t_c
            if self.set is None:
                self.on = False
                warnings.warn(f"eval.knn_label={ev.knn_label!r}: fewer than 4 cases of the data source carry it; the online probe is off")
                return
        t_p = time.time()
        row = knn_probe(self.encoder, self.set, k=ev.knn_k, chunk=ev.probe_chunk)
        cost = time.time() - t_p
        assert self.logger is not None
        self.logger.log_eval({"step": step_tag, **row, "probe_s": cost})
        self.s, self.count, self.last_s, self.last_step = self.s + cost, self.count + 1, cost, step_tag
        self.t_end, self.final = time.time(), row


@dataclass
class _Run:
    """What the steps of :func:`fit` share: the built pieces and the counters a checkpoint records."""

    cfg: RunConfig
    run_dir: Path
    last: Path  # run_dir/checkpoints/last.pt
    segments: List[Dict[str, Any]]
    resuming: bool
    method: torch.nn.Module
    fabric: Any
    source: Any
    cache_info: Optional[Dict[str, Any]]
    n_params: int
    model: Any = None  # the method as Fabric wraps it
    optimizer: Any = None
    loader: Any = None
    logger: Optional[RunLogger] = None
    probe: Optional[_OnlineProbe] = None
    deferring: List[torch.nn.Module] = field(default_factory=list)
    start_step: int = 0
    samples_seen: int = 0
    elapsed_before: float = 0.0  # wall-clock of the run before this segment
    bad: int = 0  # non-finite steps in a row
    probe_before: float = 0.0  # seconds of online probes before a resume
    probes_before: int = 0
    t0: float = 0.0  # when this segment's loop started


def _resume_plan(cfg: RunConfig, resume: Optional[bool]) -> tuple:
    """``(state, segments, resuming)``: the checkpoint to resume from (or None) and the run's config segments."""
    t, run_dir = cfg.trainer, Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if resume is True and not last.is_file():
        raise ConfigError("--resume", f"no checkpoint to resume from at {last}")
    resuming = resume is not False and last.is_file()
    state: Optional[Dict[str, Any]] = load_state(last) if resuming else None
    segments = [{"config": segment_file(1), "from_step": 0}]
    if state is not None:  # the same run, or a new config segment of it (trainer.allow_config_change)
        segments = [dict(s) for s in state.get("config_segments", segments)]
        changed = check_resume_config(_run_config(state, run_dir), config_to_dict(cfg), run_dir=run_dir, allow_change=t.allow_config_change)
        if changed:
            segments.append({"config": segment_file(len(segments) + 1), "from_step": int(state["step"]), "changed": changed})
    return state, segments, resuming


def _set_up(cfg: RunConfig, method: Optional[torch.nn.Module], source: Any, resume: Optional[bool]) -> _Run:
    """Model, devices, data, optimiser, the resumed state, loader, logger and probe: everything before step one."""
    t, run_dir = cfg.trainer, Path(cfg.run_dir)
    state, segments, resuming = _resume_plan(cfg, resume)

    # -- model (before the Fabric: the method says whether DDP must look for unused parameters)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if method is None:
        method = build_method(cfg)
    fabric = _make_fabric(cfg, find_unused=bool(getattr(method, "ddp_find_unused_parameters", False)))
    fabric.launch()
    world = fabric.world_size
    if cfg.data.batch_size % (world * t.accumulate) != 0:
        raise ConfigError("data.batch_size", f"{cfg.data.batch_size} is not divisible by devices x accumulate = {world} x {t.accumulate}")

    # -- data, optimiser ----------------------------------------------------------------
    if t.grad_checkpointing:
        method.encoder.set_grad_checkpointing(True)
    cache_info = None
    if source is None:
        cache = None
        if needs_cache(cfg):  # built when missing; refused when from another manifest or partial (unless allowed)
            cache_info = _rank_zero_first(fabric, lambda: check_cache(cfg, ensure_cache(cfg)), others=False)
            cache = cache_path(cfg)
        # rank 0 first: what a source prepares on first use (DrasCLR patch sets, report embeddings) is made once
        source = _rank_zero_first(fabric, lambda: build_source(cfg, cache))
    check_view_sizes(method, source)
    run = _Run(cfg=cfg, run_dir=run_dir, last=run_dir / "checkpoints" / "last.pt", segments=segments, resuming=resuming,
               method=method, fabric=fabric, source=source, cache_info=cache_info,
               n_params=sum(p.numel() for p in method.parameters()))
    optimizer = build_optimizer(method.param_groups(cfg.optim.weight_decay), cfg.optim)
    run.model, run.optimizer = fabric.setup(method, optimizer)
    run.model.mark_forward_method("training_step")
    if state is not None:
        _restore(run, state)
        state = None  # the loaded tensors are in the model and optimiser now

    # -- loader, logger, probe -----------------------------------------------------------
    sampler = StepBatchSampler(global_batch=cfg.data.batch_size, world_size=world, rank=fabric.global_rank,
                               accumulate=t.accumulate, start_step=run.start_step, max_steps=t.max_steps)
    dataset = StepDataset(source, method.view_generator(), seed=cfg.seed)
    run.loader = fabric.setup_dataloaders(build_loader(dataset, sampler, num_workers=cfg.data.num_workers, seed=cfg.seed), use_distributed_sampler=False)
    if fabric.is_global_zero:
        for stale in stale_segment_files(run_dir, keep=len(segments)):  # of an earlier run in this folder
            stale.unlink()
        save_config(cfg, run_dir / segments[-1]["config"])  # earlier segments' files stay as they are
        run.logger = RunLogger(run_dir, start_step=run.start_step, max_steps=t.max_steps, tensorboard=t.tensorboard,
                               progress_bar=t.progress_bar, resume=resuming, time_budget_s=t.time_budget_s,
                               elapsed_s=run.elapsed_before)
    run.probe = _OnlineProbe(cfg, source, method.encoder, run.logger)
    return run


def _restore(run: _Run, state: Dict[str, Any]) -> None:
    """The checkpoint's method, optimiser, precision and RNG state, and the run's counters."""
    method, fabric = run.method, run.fabric
    _load_method_state(method, state, run.last)
    if hasattr(method, "load_extra_state") and "method_extra" in state:
        method.load_extra_state(state["method_extra"])
    try:
        run.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{run.last}: the optimiser state does not fit the configured optimiser ({exc})") from None
    if state.get("precision"):
        fabric.strategy.precision.load_state_dict(state["precision"])
    set_rng_state(state["rng"])
    run.start_step, run.samples_seen = int(state["step"]), int(state["samples_seen"])
    run.elapsed_before, run.bad = float(state["elapsed_s"]), int(state["bad_steps"])
    run.probe_before, run.probes_before = float(state.get("probe_s", 0.0)), int(state.get("probes", 0))
    fabric.print(f"resuming {run.run_dir} at step {run.start_step}")
    segments = run.segments
    if len(segments) > 1 and segments[-1]["from_step"] == run.start_step and "changed" in segments[-1]:
        fabric.print(f"config segment {len(segments)} ({segments[-1]['config']}) from step {run.start_step}: "
                     f"{', '.join(segments[-1]['changed'])} changed (trainer.allow_config_change)")


def _one_step(run: _Run, step: int, batches: Any) -> tuple:
    """Optimiser step ``step`` (accumulated micro-batches; skipped on a non-finite loss): ``(sched, logs)``.

    ``logs`` are the step's scalar outputs, averaged over micro-batches and ranks.
    """
    cfg, t, fabric, method, model, optimizer = run.cfg, run.cfg.trainer, run.fabric, run.method, run.model, run.optimizer
    _seed_step(cfg.seed, step, fabric.global_rank)
    sched = schedule_values(step, total_steps=t.max_steps, optim=cfg.optim, schedules=cfg.schedules)
    apply_schedule(optimizer, sched)
    method.on_before_step(step, sched)
    buffers_before = _snapshot_buffers(method)  # restored if the step is skipped

    logs: Dict[str, float] = {}
    finite = True
    for a in range(t.accumulate):
        batch = next(batches)
        with fabric.no_backward_sync(model, enabled=a < t.accumulate - 1):
            out = model.training_step(batch)
            loss = out["loss"]
            fabric.backward(loss / t.accumulate)
        finite &= bool(torch.isfinite(loss.detach()).all())
        for k, v in out.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = float(v.detach())
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                logs[k] = logs.get(k, 0.0) + float(v) / t.accumulate
    run.samples_seen += cfg.data.batch_size

    n_bad_ranks = fabric.all_reduce(torch.tensor(0.0 if finite else 1.0, device=fabric.device), reduce_op="sum")
    if float(n_bad_ranks) > 0:  # skip the update on every rank; the method's state stays as it was
        optimizer.zero_grad(set_to_none=True)
        _restore_buffers(method, buffers_before)
        for m in run.deferring:
            m.discard_pending()
        method.on_skipped_step(step, sched)
        run.bad += 1
        warnings.warn(f"step {step}: non-finite loss ({logs.get('loss')}); update skipped ({run.bad} in a row)")
    else:
        run.bad = 0
        for p in method.frozen_parameters():  # after DDP's all-reduce: the optimiser skips them
            p.grad = None
        if t.grad_clip is not None:
            fabric.clip_gradients(model, optimizer, max_norm=t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for m in run.deferring:  # once per step, all micro-batches together (a collective under DDP)
            m.commit_pending()
        method.on_after_step(step, sched)

    keys = sorted(logs)
    vals = fabric.all_reduce(torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=fabric.device), reduce_op="mean")
    return sched, dict(zip(keys, (float(v) for v in vals.reshape(-1))))


def _log_step(run: _Run, step: int, sched: Dict[str, float], logs: Dict[str, float], t_step: float) -> None:
    t = run.cfg.trainer
    if run.logger is not None and (step % t.log_every == 0 or step == t.max_steps - 1):
        row = {"step": step, "loss": logs.get("loss", float("nan")), "lr": sched["lr"], "weight_decay": sched["weight_decay"]}
        row.update({k: v for k, v in sched.items() if k not in row})
        row.update({k: v for k, v in logs.items() if k not in row})
        row["samples_per_s"] = run.cfg.data.batch_size / max(time.time() - t_step, 1e-9)
        run.logger.log_step(row)


def _checkpoint(run: _Run, step_done: int) -> None:
    """``last.pt`` after ``step_done`` steps (rank 0 writes; every rank waits)."""
    if run.fabric.is_global_zero:
        method = run.method
        state = {
            "format": FORMAT, "step": step_done, "samples_seen": run.samples_seen,
            "elapsed_s": run.elapsed_before + time.time() - run.t0, "bad_steps": run.bad,
            "probe_s": run.probe_before + run.probe.s, "probes": run.probes_before + run.probe.count,
            "method": method.state_dict(), "optimizer": run.optimizer.state_dict(),
            "precision": run.fabric.strategy.precision.state_dict(), "rng": rng_state(),
            "config": config_to_dict(run.cfg), "config_segments": run.segments,
        }
        if hasattr(method, "extra_state"):
            state["method_extra"] = method.extra_state()
        save_state(state, run.last)
    run.fabric.barrier()


def _diverged(run: _Run, step: int) -> DivergedError:
    """Close the logs and name the last good checkpoint: the loss was non-finite ``trainer.max_bad_steps`` times in a row."""
    ev = run.cfg.eval
    if run.logger is not None:
        run.logger.close()
        write_curves(run.run_dir, label=ev.knn_label if ev.knn_every > 0 else None)
    return DivergedError(f"{run.run_dir}: the loss was NaN/Inf for {run.bad} steps in a row (trainer.max_bad_steps) at step {step}; the last good checkpoint is {run.last}")


def _finish(run: _Run, steps_done: int, stop_reason: str, last_loss: float) -> Dict[str, Any]:
    """The final probe, the release checkpoint, the summary and the curves."""
    cfg, t, ev, fabric, probe = run.cfg, run.cfg.trainer, run.cfg.eval, run.fabric, run.probe
    for m in run.deferring:  # outside the trainer the modules update at once again
        m.defer_updates(False)
    if probe.on and probe.last_step != steps_done:
        probe.run(steps_done)  # the trained encoder
    wall = run.elapsed_before + time.time() - run.t0
    probe_s = run.probe_before + probe.s
    summary = {
        "steps_done": steps_done, "max_steps": t.max_steps, "stop_reason": stop_reason,
        "samples_seen": run.samples_seen, "global_batch": cfg.data.batch_size, "world_size": fabric.world_size,
        "parameters": run.n_params, "wall_clock_s": wall, "final_loss": last_loss,
        "precision": t.precision, "probe_s": probe_s, "probe_share": probe_s / wall if wall > 0 else 0.0,
        "probes": run.probes_before + probe.count,
    }
    cache_info = run.cache_info
    if cache_info is not None:
        summary["cache"] = cache_info
        if cache_info.get("partial"):
            fabric.print(f"note: pretrained on a partial cache ({cache_info['cases']} of {cache_info['manifest_cases']} "
                         "cases, data.allow_partial_cache)")
    if len(run.segments) > 1:
        summary["config_segments"] = run.segments
    if probe.final is not None:
        summary["probe_label"] = ev.knn_label
        summary.update({f"final_{k}": v for k, v in probe.final.items()})
    if fabric.is_global_zero:
        assert run.logger is not None
        run.logger.close()
        from ..checkpoint import save_release

        save_release(run.run_dir / "checkpoints" / "final.safetensors", run.method, config_to_dict(cfg), data_meta(run.source))
        write_text_atomic(run.run_dir / "summary.json", json.dumps(summary, indent=2))
        write_curves(run.run_dir, label=ev.knn_label if ev.knn_every > 0 else None)
    fabric.barrier()
    return summary


def fit(cfg: RunConfig, *, method: Optional[torch.nn.Module] = None, source: Any = None, resume: Optional[bool] = None) -> Dict[str, Any]:
    """Pretrain ``method`` (default: built from ``cfg``) on ``source`` (default: built from ``cfg``).

    ``resume``: None resumes when ``run_dir/checkpoints/last.pt`` exists, True
    requires it, False starts afresh (overwriting the run's logs).
    Returns the run summary (also written to ``run_dir/summary.json``).
    """
    _check(cfg)
    tune_cpu_allocator()
    t = cfg.trainer
    run = _set_up(cfg, method, source, resume)

    run.deferring = _deferring(run.method)
    for m in run.deferring:
        m.defer_updates(True)
    run.model.train()
    batches = iter(run.loader)
    run.t0 = time.time()
    stop_reason, steps_done, last_loss = "max_steps", run.start_step, float("nan")
    for step in range(run.start_step, t.max_steps):
        if run.probe.due(step):
            run.probe.run(step)
        t_step = time.time()
        sched, logs = _one_step(run, step, batches)
        last_loss = logs.get("loss", float("nan"))
        _log_step(run, step, sched, logs, t_step)
        if run.bad >= t.max_bad_steps:
            raise _diverged(run, step)
        done = steps_done = step + 1
        elapsed = run.elapsed_before + time.time() - run.t0
        if run.logger is not None:
            run.logger.progress(done, elapsed, loss=last_loss, lr=sched["lr"])
        reserve = run.probe.last_s if run.probe.on else 0.0  # room for the final probe
        over_budget = t.time_budget_s is not None and elapsed + reserve >= t.time_budget_s
        over_budget = bool(run.fabric.broadcast(over_budget, src=0))
        if run.bad == 0 and (done % t.checkpoint_every == 0 or done == t.max_steps or over_budget):
            _checkpoint(run, done)
        if over_budget:
            stop_reason = "time_budget"
            break
    return _finish(run, steps_done, stop_reason, last_loss)
