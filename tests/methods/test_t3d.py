"""T3D: decoder reads the text, corruption views, a step lowers the loss, ablations, checkpoint round trip."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from medssl.errors import ConfigError
from medssl.heads.text_conditioned_decoder import TextConditionedDecoder
from medssl.registry import BACKBONES, METHODS
from medssl.train.data import collate_views
from medssl.views.t3d_views import T3DViews

TD = 8  # text width


def tiny_t3d(name="t3d", **kw):
    torch.manual_seed(0)
    bb = BACKBONES.build("resnet", spatial_dims=3, depth=10, width=4, stem_stride=1, max_pool=False)  # stride 8
    args = dict(text_dim=TD, joint_dim=8, proj_hidden_dim=16, decoder_dim=8, decoder_heads=2, decoder_depth=1,
                decoder_channels=[8, 4], cell=4)
    args.update(kw)
    return METHODS.build(name, backbone=bb, **args)


def batch_for(method, b=3, k=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(b):
        s = {"image": torch.rand(k, 1, size, size, size, generator=g).half(), "report_emb": torch.randn(TD, generator=g),
             "sentence_emb": torch.randn(4, TD, generator=g), "sentence_mask": torch.tensor([True, True, i % 2 == 0, False]),
             "id": f"c{i}"}
        items.append(method.view_generator()(s, rng))
    return collate_views(items)


def test_decoder_output_depends_on_text_but_not_on_masked_sentences():
    torch.manual_seed(0)
    dec = TextConditionedDecoder(6, text_dim=TD, stride=4, dim=8, depth=1, heads=2, channels=[4, 4]).eval()
    feat = torch.randn(2, 6, 2, 2, 2)
    text = torch.randn(2, 3, TD)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    y = dec(feat, text, mask)
    assert y.shape == (2, 1, 8, 8, 8)
    other = text.clone()
    other[:, 0] += 1.0
    assert (dec(feat, other, mask) - y).abs().amax() > 1e-4  # a visible sentence changes the restoration
    hidden = text.clone()
    hidden[:, 2] += 5.0
    assert torch.allclose(dec(feat, hidden, mask), y, atol=1e-6)  # a padded sentence does not
    plain = TextConditionedDecoder(6, text_dim=None, stride=4, dim=8, channels=[4, 4])
    assert plain(feat).shape == (2, 1, 8, 8, 8) and len(plain.blocks) == 0


def test_views_corrupt_only_masked_voxels_and_are_seeded():
    views = T3DViews(cell=4, ratio=0.5, flip_prob=0.5)
    s = {"image": torch.rand(2, 1, 8, 8, 8), "id": "a", "report_emb": torch.zeros(3)}
    out = views(s, np.random.default_rng(1))
    again = views(s, np.random.default_rng(1))
    assert torch.equal(out["corrupted"], again["corrupted"]) and torch.equal(out["corrupt_mask"], again["corrupt_mask"])
    m = out["corrupt_mask"]
    assert m.float().mean().item() == pytest.approx(0.5)  # exact share of 4^3 cells
    assert torch.equal(out["corrupted"][~m], out["image"][~m])  # untouched outside the mask
    assert (out["corrupted"][m] != out["image"][m]).float().mean() > 0.5
    assert "report_emb" in out and out["image"].shape == (2, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="cell"):
        T3DViews(cell=3)({"image": torch.rand(1, 1, 8, 8, 8)}, np.random.default_rng(0))


@pytest.mark.parametrize("name, kw", [
    ("t3d", {}),
    ("t3d", {"align_loss": "infonce", "aggregate": "mean"}),
    ("t3d", {"text_restoration": False}),  # plain restoration
    ("t3d", {"restoration_weight": 0.0}),  # no restoration
    ("t3d", {"align_weight": 0.0, "crop_weight": 0.0}),  # no contrastive
    ("t3d_vision", {}),
])
def test_training_step_lowers_loss(name, kw):
    m = tiny_t3d(name, **kw)
    batch = batch_for(m)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    first = m.training_step(batch)
    assert torch.isfinite(first["loss"])
    expected = {"align"} if kw.get("align_weight", 1.0) > 0 and name == "t3d" else set()
    expected |= {"crop"} if kw.get("crop_weight", 1.0) > 0 else set()
    expected |= {"restore"} if kw.get("restoration_weight", 1.0) > 0 else set()
    assert set(first) - {"loss"} == expected
    with pytest.raises(ConfigError, match="crop_size") if "restore" in expected else nullcontext():
        m.training_step(batch_for(m, size=12))
    for _ in range(4):
        opt.zero_grad()
        m.training_step(batch)["loss"].backward()
        opt.step()
    assert m.training_step(batch)["loss"] < first["loss"]
    if kw.get("restoration_weight", 1.0) > 0:
        assert (len(m.decoder.blocks) > 0) == (name == "t3d" and kw.get("text_restoration", True))


def test_grad_checkpointing_gives_the_same_loss_and_gradients():
    m = tiny_t3d()
    batch = batch_for(m)
    loss = m.training_step(batch)["loss"]
    loss.backward()
    g = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    m.encoder.set_grad_checkpointing(True)
    loss2 = m.training_step(batch)["loss"]
    loss2.backward()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-5)
    for n, p in m.named_parameters():
        if n in g:
            assert torch.allclose(p.grad, g[n], atol=1e-5), n


def test_restoration_loss_only_counts_corrupted_voxels():
    m = tiny_t3d(align_weight=0.0, crop_weight=0.0)
    batch = batch_for(m, b=2)
    base = m.training_step(batch)["restore"]
    changed = dict(batch)
    img = batch["image"].clone()
    img[~batch["corrupt_mask"]] += 10.0  # targets outside the mask are ignored
    changed["image"] = img
    assert m.training_step(changed)["restore"] == pytest.approx(base, rel=1e-5)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="align_loss"):
        tiny_t3d(align_loss="hinge")
    with pytest.raises(ConfigError, match="nothing to train"):
        tiny_t3d(align_weight=0.0, crop_weight=0.0, restoration_weight=0.0)
    m = tiny_t3d()
    with pytest.raises(ConfigError, match="text_dim"):
        m.text_embedding(torch.zeros(2, TD + 1))


def test_checkpoint_round_trip(tmp_path):
    from medssl.checkpoint import save_release
    from medssl.eval.models import from_checkpoint
    from medssl.methods.t3d_eval import load_t3d

    m = tiny_t3d()
    batch = batch_for(m)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.training_step(batch)["loss"].backward()
    opt.step()
    cfg = {"run_dir": str(tmp_path / "gone"), "method": {"name": "t3d", "text_dim": TD, "joint_dim": 8, "proj_hidden_dim": 16,
           "decoder_dim": 8, "decoder_heads": 2, "decoder_depth": 1, "decoder_channels": [8, 4], "cell": 4},
           "backbone": {"name": "resnet", "spatial_dims": 3, "depth": 10, "width": 4, "stem_stride": 1, "max_pool": False}}
    path = save_release(tmp_path / "final.safetensors", m, cfg, {"patch_size": [16, 16, 16]})
    spec = from_checkpoint(path)
    assert spec.meta["checkpoint"] == str(path)
    spec.meta.pop("checkpoint")  # as if the checkpoint had been moved away from its recorded path
    with pytest.warns(UserWarning, match="full T3D checkpoint was not found"):
        assert load_t3d(spec) is None  # the recorded run_dir holds no checkpoint
    spec.meta["checkpoint"] = str(path)
    back = load_t3d(spec)
    m.eval()
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    crops = batch["image"][:2]
    assert torch.allclose(back.embed_volume(crops), m.embed_volume(crops), atol=1e-6)
