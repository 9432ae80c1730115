"""medssl -> nnU-Net, checked with nnU-Net's own code (skipped when nnunetv2 does not import).

The synthetic cohort (an MSD-layout dataset: imagesTr, labelsTr, dataset.json)
is converted with nnU-Net's MSD converter and planned with nnU-Net's
fingerprint extractor and ResEnc M planner (in a subprocess, so that
nnunetv2's folder variables are the test's own). SimCLR and the masked U-Net
reconstruction then pretrain two steps each on the planned network, the
checkpoints are exported with ``medssl export --to nnunet``, and nnU-Net
builds its network from the plans (``get_network_from_plans``) and loads the
files (``load_pretrained_weights``, the function ``nnUNetv2_train
-pretrained_weights`` calls). Every encoder tensor must equal the pretrained
one, and for the reconstruction method every decoder tensor too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnunetv2 is an optional extra (make venv installs it; docs/nnunet.md)")
pytest.importorskip("dynamic_network_architectures")

from medssl.cli.main import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
DATASET_ID = 511

# nnU-Net's fingerprint samples 10^8 foreground voxels in total (with replacement) whatever the dataset's size;
# 10^5 gives the same statistics to a few HU on this cohort and keeps the test fast. Planning is nnU-Net's own.
PLAN = textwrap.dedent(
    """
    import sys
    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM)

    if __name__ == "__main__":
        convert_msd_dataset(sys.argv[1], overwrite_target_id=int(sys.argv[2]), num_processes=1)
        extractor = DatasetFingerprintExtractor(int(sys.argv[2]), num_processes=1)
        extractor.num_foreground_voxels_for_intensitystats = 1e5
        extractor.show_progress_bar = False
        extractor.run()
        nnUNetPlannerResEncM(int(sys.argv[2])).plan_experiment()
    """
)


def _nnunet_env(root: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", nnUNet_raw=str(root / "raw"),
               nnUNet_preprocessed=str(root / "preprocessed"), nnUNet_results=str(root / "results"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(cohort manifest, medssl cache, plans file) of a 4-patient synthetic cohort planned by nnU-Net."""
    from medssl.preprocess import preprocess_manifest
    from medssl.synth import generate_cohort

    root = tmp_path_factory.mktemp("nnunet")
    manifest = generate_cohort(root / "cohort", n=4, seed=0, preset="tiny", progress=False, xrays=False)
    task = root / "Task511_Synth"  # the MSD layout the cohort is written in
    task.mkdir()
    for part in ("imagesTr", "labelsTr"):
        (task / part).mkdir()
        for f in sorted((root / "cohort" / part).glob("*.nii.gz")):
            shutil.copy(f, task / part / f.name)
    (task / "imagesTs").mkdir()
    shutil.copy(root / "cohort" / "dataset.json", task / "dataset.json")
    script = root / "plan.py"
    script.write_text(PLAN)
    res = subprocess.run([sys.executable, str(script), str(task), str(DATASET_ID)], env=_nnunet_env(root),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    plans = root / "preprocessed" / f"Dataset{DATASET_ID:03d}_Synth" / "nnUNetResEncUNetMPlans.json"
    assert plans.is_file(), res.stdout[-2000:]
    cache = root / "cache"
    preprocess_manifest(manifest, cache, progress=False)
    return manifest, cache, plans


def _pretrain(preset: str, manifest: Path, cache: Path, plans: Path, run_dir: Path, extra=()) -> Path:
    from medssl.config import check_components, load_config
    from medssl.train.trainer import fit

    overrides = [
        f"data.manifest={manifest}", f"data.cache={cache}", f"run_dir={run_dir}", f"backbone.plans={plans}",
        "trainer.accelerator=cpu", 'trainer.precision="32"', "trainer.max_steps=2", "trainer.checkpoint_every=100",
        "trainer.progress_bar=false", "trainer.tensorboard=false", "eval.knn_every=0", "data.batch_size=2",
        "data.num_workers=0", "data.patch_size=[32,32,32]", *extra,
    ]
    cfg = load_config(CONFIGS / f"{preset}.yaml", overrides)
    check_components(cfg)
    fit(cfg)
    return run_dir / "checkpoints" / "final.safetensors"


def _nnunet_network(plans: Path):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    conf = PlansManager(str(plans)).get_configuration("3d_fullres")
    return get_network_from_plans(conf.network_arch_class_name, conf.network_arch_init_kwargs,
                                  conf.network_arch_init_kwargs_req_import, 1, 10, deep_supervision=True)


@pytest.mark.slow
def test_pretrained_weights_load_into_the_network_nnunet_plans(planned, tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from safetensors.torch import load_file

    manifest, cache, plans = planned
    runs = {
        "simclr": _pretrain("simclr_resenc_base", manifest, cache, plans, tmp_path / "simclr",
                            ["method.view_size=[24,24,24]", "method.proj_hidden_dim=64", "method.proj_dim=16"]),
        "mae_unet": _pretrain("mae_resenc_base", manifest, cache, plans, tmp_path / "mae",
                              ["method.view_size=[32,32,32]", "method.block_size=8"]),
    }
    for name, ckpt in runs.items():
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        # the pretraining data was scaled as nnU-Net's CTNormalization scales it, from the same plans file
        props = json.loads(plans.read_text())["foreground_intensity_properties_per_channel"]["0"]
        assert meta["normalisation"]["kind"] == "nnunet_ct"
        assert meta["normalisation"]["window"] == [props["percentile_00_5"], props["percentile_99_5"]]
        assert meta["normalisation"]["mean"] == props["mean"] and meta["normalisation"]["std"] == props["std"]

        out = tmp_path / f"{name}.pth"
        assert main(["export", str(ckpt), "--to", "nnunet", "--plans", str(plans), "--configuration", "3d_fullres",
                     "--out", str(out)]) == 0
        facts = json.loads((tmp_path / f"{name}.pth.json").read_text())
        assert facts["pretrained"] == {"encoder": True, "decoder": name == "mae_unet"}
        assert facts["method"] == name and facts["configuration"] == "3d_fullres"
        assert facts["notes"] == []  # same spacing and normalisation as nnU-Net's
        assert torch.load(out, weights_only=True)["medssl"]["method"] == name  # plain values only

        net = _nnunet_network(plans)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        load_pretrained_weights(net, str(out))
        got = net.state_dict()
        release = load_file(str(ckpt))
        pretrained = {k[len("encoder."):]: v for k, v in release.items() if k.startswith("encoder.")}
        encoder = [k for k in got if k.startswith(("encoder.", "decoder.encoder."))]
        decoder = [k for k in got if k.startswith("decoder.") and not k.startswith("decoder.encoder.")
                   and ".seg_layers." not in k]
        assert len(encoder) > 100 and decoder
        for k in encoder:
            src = k[len("decoder."):] if k.startswith("decoder.encoder.") else k
            assert torch.equal(got[k], pretrained[src]), k
        # the steps moved the weights nnU-Net loads (a step that trained nothing would pass the equality above)
        assert any(not torch.equal(got[k], before[k]) for k in encoder if not k.endswith("num_batches_tracked"))
        if name == "mae_unet":
            for k in decoder:
                assert torch.equal(got[k], pretrained[k]), k
        else:  # a fresh decoder, initialised as nnU-Net initialises it: not the pretrained keys (there are none)
            assert not any(k in pretrained for k in decoder)
        for k in got:  # nnU-Net's own output layers stay its own
            if ".seg_layers." in k:
                assert torch.equal(got[k], before[k]), k


def test_topology_equals_nnunet_planner():
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    from medssl.backbones.resenc_unet import plan_topology

    rng = np.random.default_rng(0)
    for _ in range(300):
        dims = int(rng.integers(2, 4))
        patch = [int(v) for v in rng.integers(3, 300, dims)]
        spacing = [float(v) for v in rng.choice([0.5, 0.8, 1.0, 1.5, 2.5, 3.0, 5.0], dims)]
        _, strides, kernels, padded, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
        mine = plan_topology(patch, spacing)
        assert mine["strides"] == [list(s) for s in strides], (patch, spacing)
        assert mine["kernel_sizes"] == [list(k) for k in kernels], (patch, spacing)
        assert mine["patch_size"] == [int(p) for p in padded], (patch, spacing)


def test_nnunet_ct_equals_nnunet_ct_normalization():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    from medssl.normalisation import from_hu

    props = {"mean": -150.5, "std": 348.3, "percentile_00_5": -969.0, "percentile_99_5": 518.0}
    hu = np.random.default_rng(1).uniform(-1500, 1500, (6, 7, 8)).astype(np.float32)
    theirs = CTNormalization(use_mask_for_norm=False, intensityproperties=props).run(hu.copy())
    ours = from_hu(hu, {"kind": "nnunet_ct", "window": [props["percentile_00_5"], props["percentile_99_5"]],
                        "mean": props["mean"], "std": props["std"]})
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
