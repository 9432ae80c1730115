"""Every registered method's tiny preset, shortened for trainer tests (DDP, skipped steps).

``CASES`` maps a case name to ``(preset, overrides)``; the overrides shrink
batches and views and put each phase switch of a method (frozen last layer /
prototypes, X-ray then CT steps, IICC's stages, DeepCluster's first
clustering) inside the first two steps. ``{patches}`` is a prepared DrasCLR
patch set (the ``drasclr_patches`` fixture), ``{tmp}`` a scratch folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

QUIET = ["trainer.accelerator=cpu", "trainer.checkpoint_every=100", "trainer.progress_bar=false",
         "trainer.tensorboard=false", "eval.knn_every=0", "data.num_workers=0"]

# UniMiSS / UniMiSS+: the smallest CT view whose deepest MiT stage keeps more than one position
SMALL_CT = ["backbone.img_size_3d=[16,64,32]", "method.views.ct_size=[16,64,32]", "data.subvolume_size=[24,96,48]",
            "method.slice_every=4"]

CASES: Dict[str, Tuple[str, List[str]]] = {
    "simclr": ("simclr", ["data.batch_size=4"]),
    "moco": ("moco", ["data.batch_size=4"]),
    "dino": ("dino", ["data.batch_size=4", "method.freeze_last_layer_steps=1"]),
    "mae": ("mae", ["data.batch_size=4"]),
    "mae_unet": ("mae_resenc", ["data.batch_size=4"]),  # the whole ResEnc U-Net (dynamic-network-architectures)
    "swav": ("swav", ["data.batch_size=4", "method.freeze_prototypes_steps=1"]),
    "deepcluster_v2": ("deepcluster", ["data.batch_size=4", "method.n_clusters=[4,4]"]),  # clusters from step 1 on
    "iicc": ("iicc", ["data.batch_size=2", "method.freeze_prototypes_steps=1"]),
    "iicc_deepcluster": ("iicc", ["data.batch_size=2", "method.clustering=deepcluster", "method.n_clusters=[4]",
                                  "method.n_clusters_3d=[2]", "method.bank_size=8"]),
    "iicc_staged": ("iicc", ["data.batch_size=2", "method.schedule=staged", "method.stage_steps=[1,1]"]),
    "drasclr": ("drasclr", ["data.batch_size=4", "data.group_size=4", "data.root={patches}"]),
    "t3d": ("t3d", ["data.batch_size=2", "data.embedding_cache={tmp}/text_embeddings"]),
    "t3d_vision": ("t3d", ["method.name=t3d_vision", "data.batch_size=2", "data.embedding_cache={tmp}/text_embeddings"]),
    "unimiss": ("unimiss", ["data.batch_size=2", "data.xray_steps=1", "data.ct_steps=1",
                            "method.freeze_last_layer_steps=1", *SMALL_CT]),
    "unimiss_plus": ("unimiss_plus", ["data.batch_size=2", "data.xray_steps=1", "data.ct_steps=1",
                                      "method.freeze_last_layer_steps=1", *SMALL_CT]),
}


def case_overrides(case: str, *, manifest: Path, cache: Path, patches: Path, tmp: Path, run_dir: Path,
                   extra: Sequence[str] = ()) -> List[str]:
    """The ``key=value`` overrides of ``case`` (later ones win)."""
    _, overrides = CASES[case]
    return [*QUIET, f"data.manifest={manifest}", f"data.cache={cache}", f"run_dir={run_dir}",
            *(o.format(patches=patches, tmp=tmp) for o in overrides), *extra]


def case_config(case: str) -> Path:
    return CONFIGS / f"{CASES[case][0]}_tiny.yaml"


def case_method(case: str) -> str:
    """The registered method name a case trains."""
    names = [o.split("=", 1)[1] for o in CASES[case][1] if o.startswith("method.name=")]
    if names:
        return names[0]
    import yaml

    return yaml.safe_load(case_config(case).read_text())["method"]["name"]
