"""One rank of the every-method DDP test: ``python run_methods_ddp.py SPEC.json OUT``.

``SPEC.json`` maps a case name to ``{"config": preset path, "overrides": [key=value, ...]}``.
For each case in turn this process trains the preset with the trainer (DDP over
gloo; ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in the environment
make Fabric join that process group) and writes, to ``OUT``:

- ``CASE.rank{R}.json``: the run summary, with ``case_s`` (the case's seconds) and
  ``state``, a fingerprint of every tensor of the method's ``state_dict()`` and
  ``extra_state()`` after training: ``[sha256 of its bytes, float64 sum, finite]``;
- ``CASE.init.json`` (rank 0): the same fingerprint of the initial weights.

Fingerprints instead of tensors: the UniMiSS models hold 40-80 M numbers.

An error is written to ``CASE.rank{R}.error`` and ends the process at once, so
the other rank fails fast instead of waiting in a collective.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

torch.set_num_threads(1)

from medssl.config import load_config  # noqa: E402
from medssl.train.build import build_method  # noqa: E402
from medssl.train.trainer import fit  # noqa: E402


def fingerprint(method: torch.nn.Module) -> dict:
    tensors = dict(method.state_dict())
    extra = method.extra_state() if hasattr(method, "extra_state") else {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            tensors[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)

    walk("extra", extra)
    out = {}
    for key, t in tensors.items():
        t = t.detach().cpu().contiguous()
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        finite = bool(torch.isfinite(t).all()) if t.is_floating_point() else True
        out[key] = [digest, float(t.double().sum()), finite]
    return out


def main(spec_path: str, out: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    out_dir = Path(out)
    for case, spec in json.loads(Path(spec_path).read_text()).items():
        t0 = time.time()
        try:
            cfg = load_config(spec["config"], spec["overrides"])
            torch.manual_seed(cfg.seed)  # as fit does before it builds the method
            method = build_method(cfg)
            if rank == 0:
                (out_dir / f"{case}.init.json").write_text(json.dumps(fingerprint(method)))
            summary = fit(cfg, method=method, resume=False)
            state = fingerprint(method)
            (out_dir / f"{case}.rank{rank}.json").write_text(json.dumps({**summary, "case_s": time.time() - t0, "state": state}))
        except BaseException:
            (out_dir / f"{case}.rank{rank}.error").write_text(traceback.format_exc())
            sys.stderr.write(traceback.format_exc())
            sys.stderr.flush()
            os._exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
