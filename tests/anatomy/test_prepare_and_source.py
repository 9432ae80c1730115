import json

import numpy as np
import torch

from medssl.anatomy.patch_source import AnatomicalPatchSource, normalise
from medssl.anatomy.patch_grid import extract_block, map_to_subject
from medssl.anatomy.prepare import load_grid
from medssl.anatomy.registration import load_result
from medssl.preprocess import Cache


def test_prepare_then_source_on_a_tiny_cohort(tiny_cohort, tmp_path):
    _, cache_dir = tiny_cohort
    src = AnatomicalPatchSource(cache=cache_dir, root=tmp_path / "patches", patch=12, step=10, progress=False)
    report = json.loads((tmp_path / "patches" / "report.json").read_text())
    assert report["ids"] and set(report["ids"]) | set(report["failed"]) == set(Cache(cache_dir).select(modality="ct"))
    assert all(d > 0.5 for cid, d in report["dice"].items() if cid in report["ids"])
    grid = load_grid(tmp_path / "patches")
    assert src.num_locations == len(grid) > 1 and len(src) == len(grid) * len(src.ids)

    # a stored patch is the block at the mapped location of the subject's HU volume
    cache = Cache(cache_dir)
    cid = src.ids[0]
    meta = cache.meta(cid)
    hu = cache.to_hu(np.asarray(cache.image(cid), np.float32), meta).transpose(2, 1, 0)
    reg = load_result(tmp_path / "patches" / "registration" / f"{cid}.json")
    from medssl.anatomy.atlas import Atlas

    atlas = Atlas.load(tmp_path / "patches" / "atlas_mask.nii.gz")
    corners = map_to_subject(grid, atlas.affine, reg.matrix, np.asarray(meta["affine"]))
    expected = np.clip(extract_block(hu, corners[3 % len(grid)], 12, -1024.0), -1024, 240).transpose(2, 1, 0)
    np.testing.assert_allclose(src.patches(cid)[3 % len(grid)], expected.astype(np.float16), atol=1.0)

    item = src[3 % len(grid)]  # location 3, subject 0
    assert item["loc_index"] == 3 % len(grid) and item["id"] == cid
    assert item["patch"].shape == (1, 12, 12, 12) and item["neighbours"].shape == (2, 1, 12, 12, 12)
    assert torch.equal(item["loc"], src.locations[item["loc_index"]])
    x = normalise(item["patch"])
    assert x.min() >= -1 and x.max() <= 1

    # a second construction reuses the prepared set (nothing is recomputed)
    before = (tmp_path / "patches" / "patches" / f"{cid}.npy").stat().st_mtime_ns
    again = AnatomicalPatchSource(root=tmp_path / "patches")
    assert again.ids == src.ids
    assert (tmp_path / "patches" / "patches" / f"{cid}.npy").stat().st_mtime_ns == before


def test_epoch_order_groups_locations_and_interleaves_them(tiny_cohort, tmp_path):
    _, cache_dir = tiny_cohort
    src = AnatomicalPatchSource(cache=cache_dir, root=tmp_path / "p", patch=12, step=10, group_size=2, progress=False)
    L, S = src.num_locations, len(src.ids)
    order = src.epoch_order(0, seed=0)
    assert sorted(order.tolist()) == list(range(L * S))  # every (location, subject) pair once
    locs = order % L
    full = (S // 2) * L  # chunks of 2 subjects at one location
    assert all(locs[i] == locs[i + 1] for i in range(0, full, 2))
    # each round visits every location once, so a location's queue is refreshed all along the pass
    assert sorted(locs[: 2 * L: 2].tolist()) == list(range(L))
    assert not np.array_equal(order, src.epoch_order(1, seed=0))
    assert np.array_equal(order, src.epoch_order(0, seed=0))
    mixed = AnatomicalPatchSource(root=tmp_path / "p")
    assert sorted(mixed.epoch_order(0, seed=0).tolist()) == list(range(L * S))
