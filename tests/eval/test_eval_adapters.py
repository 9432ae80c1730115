"""Method families' evaluation adapters: registered under method names, called by the generic harness."""

from medssl.eval.models import patch_for_dims
from medssl.methods.base import EvalAdapter
from medssl.registry import EVAL_ADAPTERS, METHODS, eval_adapter


def test_adapters_are_registered_under_method_names():
    assert EVAL_ADAPTERS.names() and set(EVAL_ADAPTERS.names()) <= set(METHODS.names())
    assert all(isinstance(EVAL_ADAPTERS.get(n), EvalAdapter) for n in EVAL_ADAPTERS.names())
    assert type(eval_adapter("simclr")) is EvalAdapter and type(eval_adapter(None)) is EvalAdapter


def test_the_2d_patch_of_a_unimiss_checkpoint_is_its_xray_view_size():
    cfg = {"method": {"name": "unimiss", "views": {"xr_size": 64}}}
    meta = {"method": "unimiss", "config": cfg, "patch_size": [16, 96, 96]}
    assert patch_for_dims(meta, 2) == (64, 64)
    assert patch_for_dims(dict(meta, method="unimiss_plus"), 2) == (64, 64)
    assert patch_for_dims(dict(meta, method="simclr"), 2) == (96, 96)  # another method: the 3D patch's plane
    assert patch_for_dims(meta, 3) == (16, 96, 96)
