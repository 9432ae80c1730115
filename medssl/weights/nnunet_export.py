"""``medssl export CKPT --to nnunet``: a release checkpoint as the weights file ``nnUNetv2_train -pretrained_weights`` loads.

nnU-Net (``nnunetv2/run/load_pretrained_weights.py``) reads
``torch.load(FILE)["network_weights"]`` and requires every key of the network
it planned, except ``.seg_layers.`` (its output layers for its own labels), to
be there with the same shape. The export therefore holds the whole network
under nnU-Net's key names: the pretrained encoder (also under
``decoder.encoder.``, where nnU-Net's decoder keeps a reference to it), the
pretrained decoder where the method trained one (``mae_unet``), otherwise a
decoder freshly initialised as nnU-Net initialises it. The pretraining facts
go into the file (``"medssl"``: plain values, so ``torch.load(weights_only=True)``
reads it too) and into ``FILE.json`` beside it.

Before anything is written, the network the plans file describes for the
configuration is compared with the checkpoint's: input channels, stages,
features per stage, kernels, strides, blocks, decoder convolutions (when the
decoder is pretrained), operators and the planned patch size. Any difference
is one :class:`~medssl.errors.CheckpointError` naming each entry. Differences
that do not change the weights but do change what the network sees (spacing,
intensity normalisation) are returned as notes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

from ..errors import CheckpointError

__all__ = ["export_nnunet", "compare_with_plans", "FORMAT"]

FORMAT = "medssl-nnunet-export"
#: The seed of the freshly initialised parts (a decoder no method trained); fixed so exports are reproducible.
INIT_SEED = 0


def _classes(arch: Dict[str, Any]) -> Dict[str, Any]:
    from ..backbones.resenc_unet import ALLOWED_CLASSES, arch_summary

    out = arch_summary(arch)
    for key in ("conv_op", "norm_op"):
        name = out.get(key)
        out[key] = ALLOWED_CLASSES[key][name].__name__ if name in ALLOWED_CLASSES[key] else name
    out["norm_affine"] = bool((arch.get("norm_op_kwargs") or {}).get("affine", True))
    return out


def compare_with_plans(backbone: Any, conf: Any) -> List[str]:
    """``"entry: checkpoint X, plans Y"`` for every difference that changes the weights or the planned patch."""
    from ..backbones.resenc_unet import check_arch

    problems = []
    if conf.in_channels is not None and conf.in_channels != backbone.in_channels:
        problems.append(f"input channels: checkpoint {backbone.in_channels}, plans {conf.in_channels}")
    mine, theirs = _classes(backbone.arch), _classes(check_arch(conf.arch, key="--plans"))
    skip = () if backbone.has_decoder else ("n_conv_per_stage_decoder",)  # a fresh decoder is built from the plans
    for key in mine:
        if key not in skip and mine[key] != theirs[key]:
            problems.append(f"{key}: checkpoint {mine[key]}, plans {theirs[key]}")
    if list(backbone.planned_patch_size) != list(conf.patch_size):
        problems.append(f"patch size: checkpoint planned for {list(backbone.planned_patch_size)}, plans "
                        f"{list(conf.patch_size)}")
    return problems


def _notes(meta: Dict[str, Any], conf: Any) -> List[str]:
    """What the network will see in nnU-Net that it did not see in pretraining (spacing, intensities)."""
    from ..normalisation import describe, same

    notes = []
    spacing = meta.get("spacing")
    if spacing and len(spacing) == len(conf.spacing_xyz):
        off = max(abs(float(a) - float(b)) / float(b) for a, b in zip(spacing, conf.spacing_xyz))
        if off > 0.05:
            notes.append(f"spacing: pretrained at {[round(float(s), 4) for s in spacing]} mm (x, y, z), nnU-Net "
                         f"resamples to {[round(s, 4) for s in conf.spacing_xyz]} mm (medssl preprocess --spacing)")
    scheme = conf.normalization_schemes[0] if conf.normalization_schemes else None
    norm = meta.get("normalisation")
    if scheme == "CTNormalization":
        props = conf.intensity_properties.get("0") or {}
        want = None
        if all(k in props for k in ("percentile_00_5", "percentile_99_5", "mean", "std")):
            want = {"kind": "nnunet_ct", "window": [props["percentile_00_5"], props["percentile_99_5"]],
                    "mean": props["mean"], "std": props["std"]}
        try:
            ok = want is not None and bool(norm) and same(norm, want)
        except ValueError:
            ok = False
        if not ok:
            notes.append(f"normalisation: pretrained on {describe(norm) if norm else 'unrecorded values'}; nnU-Net "
                         f"feeds CTNormalization{' (' + describe(want) + ')' if want else ''}: pretrain with "
                         "data.normalisation={kind: nnunet_ct, plans: PLANS.json}")
    elif scheme is not None:
        notes.append(f"normalisation: nnU-Net feeds {scheme}; the checkpoint records "
                     f"{describe(norm) if norm else 'nothing'}")
    return notes


def export_nnunet(checkpoint: Union[str, Path], *, plans: Union[str, Path], configuration: str = "3d_fullres",
                  out: Union[str, Path]) -> Dict[str, Any]:
    """Write ``out`` (``{"network_weights": ..., "medssl": facts}``) and ``out.json``; returns the facts."""
    from .. import __version__
    from ..backbones.resenc_unet import build_network
    from ..checkpoint import _atomic_write_bytes, check_release_outputs, git_hash, load_encoder, sidecar_path
    from ..io.nnunet_plans import RESENC_CLASS, read_configuration

    checkpoint, plans, out = Path(checkpoint), Path(plans), Path(out)
    info_path = out.with_name(out.name + ".json")
    check_release_outputs("--out", [out, info_path], [checkpoint, sidecar_path(checkpoint), plans])
    conf = read_configuration(plans, configuration)
    backbone, meta = load_encoder(checkpoint)
    name = (meta.get("backbone") or {}).get("name")
    if name != "resenc_unet":
        raise CheckpointError(f"{checkpoint}: backbone '{name}' is not nnU-Net's ResidualEncoderUNet; --to nnunet "
                              "exports resenc_unet checkpoints (pretrain with backbone.name=resenc_unet)")
    if conf.network_class != RESENC_CLASS:
        raise CheckpointError(f"{plans}: configuration '{configuration}' plans {conf.network_class}, the checkpoint "
                              f"holds {RESENC_CLASS}; plan with nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM (or L)")
    problems = compare_with_plans(backbone, conf)
    if problems:
        raise CheckpointError(f"{checkpoint}: does not fit the network {plans} plans for '{configuration}': "
                              + "; ".join(problems))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        net = build_network(conf.arch, backbone.in_channels, backbone.out_channels)
    # load the pretrained tensors into the planned network: its state dict keeps the storage d-n-a shares
    # (a conv under `conv.` and `all_modules.0.`, the encoder again under `decoder.encoder.`), saved once
    own = {k: v for k, v in backbone.state_dict().items() if ".seg_layers." not in k}
    planned = net.state_dict()
    misfit = [f"{k} {tuple(v.shape)}" for k, v in own.items() if k not in planned or planned[k].shape != v.shape]
    if misfit:  # compare_with_plans should have caught it
        raise CheckpointError(f"{checkpoint}: {len(misfit)} tensors have no place in the planned network: {misfit[:3]}")
    net.load_state_dict(own, strict=False)
    weights = {k: v for k, v in net.state_dict().items() if ".seg_layers." not in k}
    taken = len(own)
    notes = _notes(meta, conf)
    facts = {
        "format": FORMAT, "source": str(checkpoint), "method": meta.get("method"),
        "pretrained": {"encoder": True, "decoder": bool(backbone.has_decoder)},
        "freshly_initialised": [] if backbone.has_decoder else ["decoder.stages", "decoder.transpconvs"],
        "left_out": "decoder.seg_layers.* (nnU-Net builds them for its labels and never loads them)",
        "spacing": meta.get("spacing"), "patch_size": meta.get("patch_size"), "normalisation": meta.get("normalisation"),
        "in_channels": backbone.in_channels, "plans": str(plans), "plans_name": conf.plans_name,
        "configuration": configuration, "planned_patch_size": list(conf.patch_size),
        "planned_spacing_xyz": conf.spacing_xyz, "planned_normalization": conf.normalization_schemes,
        "keys": len(weights), "pretrained_keys": taken, "notes": notes,
        "medssl_version": __version__, "git_hash": git_hash(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out, lambda tmp: torch.save({"network_weights": weights, "medssl": facts}, tmp))
    _atomic_write_bytes(info_path, lambda tmp: tmp.write_text(json.dumps(facts, indent=2, default=str)))
    return facts
