"""A step skipped for a non-finite loss leaves the method's state as it was.

Each stateful method trains 3 steps of its tiny preset in one process with
the batch of step 1 multiplied by Inf, so its loss is NaN and the trainer
skips the update (IICC: the loss of step 1, see ``POISON_LOSS``). The whole state (parameters, EMA teachers, buffers: DINO /
UniMiSS centre, DeepCluster banks and centroids, batch-norm statistics; and
``extra_state()``: MoCo / DrasCLR queues) seen by step 2 must equal the state
seen by step 1, and the run must end with finite state (keys of the skipped
step never reach a queue at the next good step).
"""

from __future__ import annotations

from typing import Any, Dict

import pytest
import torch

from medssl.config import load_config
from medssl.train.build import build_method
from medssl.train.trainer import fit

from train.method_cases import case_config, case_overrides

BAD_STEP = 1
STATEFUL = ["dino", "unimiss", "unimiss_plus", "iicc_deepcluster", "deepcluster_v2", "swav", "moco", "drasclr"]
# IICC: the CPU loops of the deformable slice attention corrupt memory on an Inf input (the process aborts), so
# its step runs on the real batch (the banks take its embeddings) and only the loss is made non-finite
POISON_LOSS = {"iicc_deepcluster"}


def state_of(method: torch.nn.Module) -> Dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in method.state_dict().items()}
    extra = method.extra_state() if hasattr(method, "extra_state") else {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value.detach().clone()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)

    walk("extra", extra)
    return out


def poison(batch: Any) -> Any:
    """Every float tensor of the batch times Inf."""
    if isinstance(batch, torch.Tensor):
        return batch * float("inf") if batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: poison(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(poison(v) for v in batch)
    return batch


def instrument(method: torch.nn.Module, bad_step: int, poison_loss: bool = False) -> Dict[int, Dict[str, torch.Tensor]]:
    """Record the state each step's ``training_step`` starts from; poison the batch (or the loss) of ``bad_step``.

    The method's class is swapped for a subclass (Fabric calls ``training_step`` as a method of the class).
    """
    seen: Dict[int, Dict[str, torch.Tensor]] = {}
    base = type(method)

    class Instrumented(base):  # type: ignore[misc, valid-type]
        def on_before_step(self, step, sched):
            self._test_step = step
            super().on_before_step(step, sched)

        def training_step(self, batch):
            seen.setdefault(self._test_step, state_of(self))
            if self._test_step != bad_step:
                return super().training_step(batch)
            if not poison_loss:
                return super().training_step(poison(batch))
            out = super().training_step(batch)
            return {**out, "loss": out["loss"] * float("inf")}

    method.__class__ = Instrumented
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("case", STATEFUL)
def test_a_skipped_step_leaves_the_method_state_unchanged(case, tiny_cohort, drasclr_patches, tmp_path):
    manifest, cache = tiny_cohort
    cfg = load_config(case_config(case), case_overrides(
        case, manifest=manifest, cache=cache, patches=drasclr_patches, tmp=tmp_path, run_dir=tmp_path / "run",
        extra=["trainer.max_steps=3", "trainer.max_bad_steps=2", "trainer.devices=1"]))
    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    seen = instrument(method, BAD_STEP, poison_loss=case in POISON_LOSS)
    with pytest.warns(UserWarning, match=f"step {BAD_STEP}: non-finite loss"):
        summary = fit(cfg, method=method, resume=False)
    assert summary["steps_done"] == 3 and sorted(seen) == [0, 1, 2]

    start, after = seen[BAD_STEP], seen[BAD_STEP + 1]
    assert start.keys() == after.keys()
    changed = []
    for k, v in start.items():
        w = after[k]
        same = torch.allclose(v, w, rtol=0, atol=1e-6) if v.is_floating_point() else torch.equal(v, w)
        if not same:  # allclose: SwAV renormalises its (unchanged) prototypes before every step
            changed.append(k)
    changed.sort(key=lambda k: k.endswith(("running_mean", "running_var", "num_batches_tracked")))  # method state first
    assert not changed, f"{case}: the skipped step changed {changed[:10]}"
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(seen[0][k], start[k])]
    assert moved, f"{case}: step 0 changed nothing (the test would not see a change)"
    final = state_of(method)  # after a good step: nothing of the skipped step came back (queued keys)
    bad = [k for k, v in final.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    assert not bad, f"{case}: non-finite state after the next good step: {bad[:10]}"
