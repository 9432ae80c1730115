"""A real MRI no one here made: the MNI152 template that ships with nilearn."""

from pathlib import Path

import numpy as np
import pytest

from medssl.io import read_volume

nilearn = pytest.importorskip("nilearn")
DATA = Path(nilearn.__file__).parent / "datasets" / "data"


def test_mni152_t1_reads_with_a_1mm_ras_affine_and_matches_its_tissue_maps():
    t1_path = DATA / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    gm_path = DATA / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
    wm_path = DATA / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
    if not t1_path.is_file():
        pytest.skip(f"{t1_path} not shipped by this nilearn version")
    import nibabel as nib

    t1, gm, wm = read_volume(t1_path), read_volume(gm_path), read_volume(wm_path)
    ref = nib.load(str(t1_path))
    assert t1.array.shape == ref.shape and t1.array.dtype == np.float32
    np.testing.assert_allclose(t1.spacing, (1.0, 1.0, 1.0), atol=1e-6)
    # RAS: the affine read back agrees with nibabel's canonical orientation of the same file
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
    np.testing.assert_allclose(t1.affine, nib.as_closest_canonical(ref).affine, atol=1e-5)
    # the tissue maps share the T1 grid, and white matter is brighter than grey matter on T1
    assert gm.array.shape == wm.array.shape == t1.array.shape
    np.testing.assert_allclose(gm.affine, t1.affine, atol=1e-5)
    wm_mean = t1.array[wm.array > 0.5].mean()
    gm_mean = t1.array[gm.array > 0.5].mean()
    assert wm_mean > 1.1 * gm_mean
