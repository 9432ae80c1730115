import numpy as np

from medssl.anatomy.lung_mask import lung_mask


def phantom():
    """Air around a body (+40 HU) with two lungs (-850) and a vessel (+40) inside one."""
    x, y, z = np.meshgrid(np.arange(64), np.arange(64), np.arange(40), indexing="ij")
    hu = np.full((64, 64, 40), -1000.0)
    body = ((x - 32) / 28.0) ** 2 + ((y - 32) / 22.0) ** 2 <= 1
    hu[body] = 40
    left = (((x - 20) / 9.0) ** 2 + ((y - 32) / 12.0) ** 2 + ((z - 20) / 16.0) ** 2) <= 1
    right = (((x - 44) / 9.0) ** 2 + ((y - 32) / 12.0) ** 2 + ((z - 20) / 16.0) ** 2) <= 1
    hu[left | right] = -850
    vessel = ((x - 20) ** 2 + (y - 32) ** 2 <= 2) & left
    hu[vessel] = 40
    return hu, left | right


def test_lung_mask_finds_both_lungs_and_fills_vessels():
    hu, truth = phantom()
    mask = lung_mask(hu, spacing=(1.5, 1.5, 2.0))
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95
    assert not mask[0, 0, 0]  # outside air excluded
    assert mask[20, 32, 20]  # the vessel inside the lung is filled
    assert not mask[32, 32, 20]  # mediastinum between the lungs is not lung


def test_no_lungs_gives_empty_mask():
    hu = np.full((20, 20, 10), 40.0)
    assert not lung_mask(hu).any()
