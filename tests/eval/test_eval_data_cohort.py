from medssl.eval.data import load_eval_data
from medssl.splits import train_test_split


def test_xray_evaluation_leaves_out_unpaired_images_and_groups_views_by_patient(tiny_cohort):
    manifest, cache = tiny_cohort
    xr = load_eval_data(manifest, cache=cache, spatial_dims=2, strict=True)
    ct = load_eval_data(manifest, cache=cache, spatial_dims=3, strict=True)
    assert xr.spatial_dims == 2 and ct.spatial_dims == 3
    assert all(xr.splits[i] != "unpaired" for i in xr.ids)
    assert len(xr.ids) == 2 * len(ct.ids)  # a PA and a lateral per CT, the unpaired ones left out
    assert {xr.groups[i] for i in xr.ids} == set(ct.ids)
    tr, te = train_test_split(xr.ids, groups=[xr.groups[i] for i in xr.ids])
    ct_tr, ct_te = train_test_split(ct.ids, groups=[ct.groups[i] for i in ct.ids])
    assert {xr.groups[i] for i in te} == set(ct_te) and {xr.groups[i] for i in tr} == set(ct_tr)
