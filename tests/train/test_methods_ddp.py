"""Every registered method trains under DDP: its tiny preset, 2 CPU ranks over gloo, a few steps.

One pair of rank processes trains every case in turn (``run_methods_ddp.py``),
then each case is checked: both ranks end with identical parameters and
method state (EMA teachers, DINO centre, DeepCluster bank, MoCo / DrasCLR
queues; batch-norm running statistics are per rank by design), the encoder
moved, and everything is finite. DDP fails a step with "Expected to have
finished reduction" when a registered trainable parameter gets no gradient,
so a method that freezes by detaching, or leaves a head out of a step
without declaring it, fails here. The overrides shorten the runs and put
each phase switch of a method (frozen last layer / prototypes, X-ray then CT
steps, IICC's stages) inside the two steps.

A second test starts two torchrun node agents (one process each, as
``--nnodes=2 --nproc_per_node=1`` on two machines would) with a c10d
rendezvous on 127.0.0.1 and checks the same for DrasCLR (EMA key encoder,
per-location queues; no MONAI import, so the agents start fast).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medssl.registry import METHODS

from train.method_cases import CASES, case_config, case_method, case_overrides

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2", "trainer.max_bad_steps=1"]

PER_RANK_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # batch norm: each rank's own batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_registered_method_has_a_ddp_case():
    methods = {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("medssl.")}  # not the test toys
    assert len(methods) >= 12 and {case_method(c) for c in CASES} >= methods


def spec_of(case: str, tiny_cohort, patches: Path, tmp: Path, run_dir: Path, extra=()) -> dict:
    manifest, cache = tiny_cohort
    return {"config": str(case_config(case)), "overrides": case_overrides(
        case, manifest=manifest, cache=cache, patches=patches, tmp=tmp, run_dir=run_dir, extra=[*DDP, *extra])}


@pytest.fixture(scope="module")
def ddp_runs(tiny_cohort, drasclr_patches, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("methods_ddp")
    spec = {case: spec_of(case, tiny_cohort, drasclr_patches, tmp, tmp / "runs" / case) for case in CASES}
    (tmp / "spec.json").write_text(json.dumps(spec))
    out = tmp / "out"
    out.mkdir()
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "run_methods_ddp.py"), str(tmp / "spec.json"), str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=540)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs.append(p.communicate()[0].decode(errors="replace"))
    return out, logs


def check_case(out: Path, case: str, log: str) -> None:
    """Both ranks ran ``case`` to the end with identical parameters and method state; the encoder moved."""
    for rank in range(2):
        err = out / f"{case}.rank{rank}.error"
        if err.is_file():
            pytest.fail(f"{case} failed on rank {rank}:\n{err.read_text()[-3000:]}")
    runs = [out / f"{case}.rank{rank}.json" for rank in range(2)]
    if not all(r.is_file() for r in runs):
        pytest.fail(f"{case} did not run (an earlier case or the launch failed):\n{log[-3000:]}")
    s0, s1 = (json.loads(r.read_text()) for r in runs)
    for summary in (s0, s1):
        assert summary["world_size"] == 2 and summary["steps_done"] == 2, summary
    w0, w1 = s0["state"], s1["state"]  # key -> [sha256, sum, finite]
    init = json.loads((out / f"{case}.init.json").read_text())
    assert w0.keys() == w1.keys() == init.keys()
    differ = [f"{k} (sums {w0[k][1]:.9g} / {w1[k][1]:.9g})" for k in w0
              if not k.endswith(PER_RANK_BUFFERS) and w0[k][0] != w1[k][0]]
    assert not differ, f"{case}: the ranks disagree on {len(differ)} tensors: {differ[:8]}"
    assert [k for k in w0 if not w0[k][2]] == [], f"{case}: non-finite tensors"
    moved = [k for k in init if k.startswith("encoder.") and init[k][0] != w0[k][0]]
    assert moved, f"{case}: no encoder weight changed in training"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_method_trains_under_ddp_with_identical_ranks(ddp_runs, case):
    out, logs = ddp_runs
    check_case(out, case, logs[0])


@pytest.mark.slow
def test_two_torchrun_node_agents(tiny_cohort, drasclr_patches, tmp_path):
    """``torchrun --nnodes=2 --nproc_per_node=1`` twice (one agent per "node"), c10d rendezvous on 127.0.0.1."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    # one process per node: trainer.devices=1 (the later override wins), trainer.num_nodes=2
    spec = {"drasclr": spec_of("drasclr", tiny_cohort, drasclr_patches, tmp_path, tmp_path / "run",
                               ["trainer.devices=1", "trainer.num_nodes=2"])}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    procs = []
    for node in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        agent = [torchrun, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                 "--rdzv_id=medssl-test", f"--rdzv_conf=is_host={1 if node == 0 else 0}", f"--node_rank={node}",
                 "--local_addr=127.0.0.1", "--max_restarts=0", "--monitor_interval=0.5",
                 str(HERE / "run_methods_ddp.py"), str(tmp_path / "spec.json"), str(out)]
        procs.append(subprocess.Popen(agent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(tmp_path)))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs.append(p.communicate()[0].decode(errors="replace"))
    for node, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {node}:\n{log[-4000:]}"
    check_case(out, "drasclr", logs[0])
