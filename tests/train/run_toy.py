"""Run the toy trainer in a separate process: ``python run_toy.py RUN_DIR key=value ...``.

Used by the kill-and-resume and distributed tests. With ``RANK``/``WORLD_SIZE``
and ``MASTER_ADDR``/``MASTER_PORT`` in the environment, Fabric joins that
process group instead of launching one.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

from toy import toy_config  # noqa: E402

from medssl.train.trainer import fit  # noqa: E402

if __name__ == "__main__":
    run_dir, *pairs = sys.argv[1:]
    cfg = toy_config(run_dir, **dict(p.split("=", 1) for p in pairs))
    summary = fit(cfg)
    print(json.dumps(summary))
