"""Segmentation fine-tuning, sliding-window inference and Dice / HD95."""

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from medssl.eval.seg_model import SegmentationModel
from medssl.eval.segmentation import SegFinetuneConfig, dice_hd95, evaluate_segmentation, finetune_segmentation


def _slow_hd95(pa, pb, sp):
    ea = np.argwhere(pa & ~binary_erosion(pa)) * sp
    eb = np.argwhere(pb & ~binary_erosion(pb)) * sp
    d = cdist(ea, eb)
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


@pytest.mark.parametrize("spacing", [None, (0.7, 1.3, 2.0)])
def test_dice_hd95_on_known_masks(spacing):
    a = np.zeros((20, 20, 20), np.uint8)
    b = a.copy()
    a[4:12, 4:12, 4:12] = 1
    b[5:13, 6:14, 4:12] = 1
    a[14:18, 14:18, 14:18] = 2
    b[14:18, 14:18, 14:18] = 2
    m = dice_hd95(b, a, num_classes=4, spacing=spacing)
    inter = 7 * 6 * 8
    assert m["dice"][0] == pytest.approx(2 * inter / (512 + 512))
    sp = np.array(spacing or (1.0, 1.0, 1.0))
    assert m["hd95"][0] == pytest.approx(_slow_hd95(a == 1, b == 1, sp), rel=1e-5)
    assert m["dice"][1] == 1.0 and m["hd95"][1] == 0.0
    assert np.isnan(m["dice"][2]) and np.isnan(m["hd95"][2])  # class 3 absent


def test_decoder_shapes_for_any_stride(tiny_encoder):
    model = SegmentationModel(tiny_encoder, num_classes=3)
    assert model(torch.zeros(2, 1, 16, 12, 8)).shape == (2, 3, 16, 12, 8)


def test_finetune_beats_chance(tiny_encoder, toy_volumes):
    imgs, labs = [v[0] for v in toy_volumes], [v[1] for v in toy_volumes]
    cfg = SegFinetuneConfig(steps=60, batch_size=2, lr=3e-3, encoder_lr_scale=1.0, warmup_steps=5)
    model = finetune_segmentation(tiny_encoder, imgs[:6], labs[:6], num_classes=3, patch_size=(16, 16, 16), config=cfg)
    res = evaluate_segmentation(model, imgs[6:], labs[6:], num_classes=3, patch_size=(16, 16, 16), class_names=["sphere", "box"])
    # chance: a random label per voxel gives Dice ~ 2 p / (p + 1/3) for a class of volume share p (< 0.1 here)
    assert res["mean_dice"] > 0.6, res
    assert set(res) >= {"dice_sphere", "dice_box", "hd95_sphere", "mean_hd95"}


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.5)])
def test_hd95_of_a_missed_class_is_the_image_diagonal(spacing):
    gt = np.zeros((10, 12, 14), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    gt[7:9, 7:9, 7:9] = 2
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)  # class 2 missed entirely
    m = dice_hd95(pred, gt, num_classes=3, spacing=spacing)
    sp = np.array(spacing or (1.0, 1.0, 1.0))
    assert m["hd95"][1] == pytest.approx(float(np.sqrt(np.sum((np.array(gt.shape) * sp) ** 2))))
    assert m["dice"][1] == 0.0
    # a model that misses the class never scores a better mean HD95 than one that finds it roughly
    rough = pred.copy()
    rough[6:9, 7:10, 7:9] = 2
    assert dice_hd95(rough, gt, num_classes=3, spacing=spacing)["hd95"][1] < m["hd95"][1]


def test_lr_schedule_warms_up_then_decays():
    cfg = SegFinetuneConfig(steps=100, warmup_steps=10)
    f = [cfg.lr_factor(t) for t in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] < 0.05


def test_augmentation_keeps_labels_with_their_voxels():
    from medssl.eval.segmentation import augment_batch

    rng = np.random.default_rng(0)
    x = torch.rand(4, 1, 8, 8, 8)
    y = (x > 0.5).long()
    xa, ya = augment_batch(x, y, rng)
    # no left-right (last axis) flip: the labelled voxels stay in their columns along X
    assert torch.equal(y.sum(dim=(1, 2, 3)), ya.sum(dim=(1, 2, 3)))
    # intensities move by a few percent only: the thresholded map is nearly preserved where it was not flipped
    agree = ((xa > 0.5).long() == ya).float().mean()
    assert agree > 0.9


def test_spatial_augmentation_moves_labels_with_their_voxels():
    from medssl.eval.segmentation import spatial_augment

    x = torch.zeros(3, 1, 16, 24, 32)
    x[:, :, 4:12, 6:18, 8:20] = 1.0
    x[:, :, 4:12, 6:18, 22:28] = 2.0  # a second organ on the image's right: must stay there
    y = x.round().long()
    # identity transform: nothing changes
    xi, yi = spatial_augment(x, y, np.random.default_rng(0), prob=1.0, max_rotation_deg=0.0, scale_range=(1.0, 1.0))
    assert torch.allclose(xi, x, atol=1e-5) and torch.equal(yi, y)
    xa, ya = spatial_augment(x, y, np.random.default_rng(1), prob=1.0)
    assert not torch.equal(ya, y)  # it did move something
    # the label map is the transformed image's own labelling, voxel for voxel (nearest vs linear at edges only)
    assert (xa.round().long() == ya).float().mean() > 0.97
    # the rotation stays in the axial (Y-X) plane: without zoom every slice along Z holds what it held
    _, yr = spatial_augment(x, y, np.random.default_rng(3), prob=1.0, max_rotation_deg=30.0, scale_range=(1.0, 1.0))
    assert not torch.equal(yr, y)
    assert torch.equal((yr > 0).any(dim=-1).any(dim=-1), (y > 0).any(dim=-1).any(dim=-1))
    # left and right keep their sides: organ 2's voxels stay right of organ 1's
    for b in range(3):
        cols1 = torch.nonzero(ya[b, 0] == 1)[:, -1].float().mean()
        cols2 = torch.nonzero(ya[b, 0] == 2)[:, -1].float().mean()
        assert cols2 > cols1
    # prob 0: the batch is returned as it came
    x0, y0 = spatial_augment(x, y, np.random.default_rng(2), prob=0.0)
    assert x0 is x and y0 is y
