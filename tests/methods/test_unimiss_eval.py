"""MiT+ segmentation on its pretrained decoder: the fine-tune starts from the checkpoint's decoder, trains with the
harness's schedule, and runs on patches the decoder can restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.eval.segmentation import SegFinetuneConfig

CT = (16, 64, 64)
SMALL = {"width": 0.125, "depths": (1, 1, 1, 1), "img_size_2d": 64, "img_size_3d": CT}


def _volume(rng: np.random.Generator):
    """A [16, 64, 64] volume with a bright block (label 1) and a dim one (label 2)."""
    img = 0.1 + 0.02 * rng.normal(size=CT)
    lab = np.zeros(CT, np.uint8)
    z, y, x = rng.integers(2, 6), rng.integers(4, 24), rng.integers(4, 24)
    lab[z:z + 8, y:y + 20, x:x + 20] = 1
    lab[z + 2:z + 6, y + 30:y + 38, x + 30:x + 38] = 2
    img[lab == 1] += 0.6
    img[lab == 2] += 0.3
    return img.astype(np.float32), lab


@pytest.fixture
def release(tmp_path):
    """A UniMiSS+ release checkpoint whose exported (teacher) decoder differs from the student's and from any
    fresh initialisation (LayerNorm weights moved off 1, biases off 0)."""
    from medssl.checkpoint import save_release
    from medssl.registry import BACKBONES, METHODS

    torch.manual_seed(0)
    bb = BACKBONES.build("mit_plus", **SMALL)
    m = METHODS.build("unimiss_plus", backbone=bb, out_dim=16, hidden_dim=16, bottleneck_dim=8,
                      views={"ct_size": CT, "xr_size": 64, "drr_size": 64})
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.teacher.decoder.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    cfg = {"method": {"name": "unimiss_plus"}, "backbone": {"name": "mit_plus", **{k: list(v) if isinstance(v, tuple) else v
                                                                                    for k, v in SMALL.items()}}}
    path = save_release(tmp_path / "final.safetensors", m, cfg, {"patch_size": list(CT)})
    return path, {k: v.clone() for k, v in m.teacher.decoder.state_dict().items()}


def test_mit_plus_finetune_starts_from_the_checkpoint_decoder(release):
    from medssl.methods.unimiss_eval import MiTPlusSegNet, finetune_mit_segmentation
    from medssl.eval.models import baseline_for, from_checkpoint

    path, decoder = release
    spec = from_checkpoint(path)
    img, lab = _volume(np.random.default_rng(0))
    start = finetune_mit_segmentation(spec.build(0), [img], [lab], num_classes=3, patch_size=CT,
                                      config=SegFinetuneConfig(steps=0))
    assert isinstance(start, MiTPlusSegNet)
    got = start.decoder.state_dict()
    assert set(got) == set(decoder)
    for k, v in decoder.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=f"decoder weight {k} is not the checkpoint's")
    # the random-init row of the same backbone starts from another decoder: the comparison above can fail
    rand = finetune_mit_segmentation(baseline_for(spec).build(0), [img], [lab], num_classes=3, patch_size=CT,
                                     config=SegFinetuneConfig(steps=0))
    assert not torch.equal(rand.decoder.state_dict()["norm.weight"], decoder["norm.weight"])


def test_mit_plus_finetune_trains_a_few_steps_with_the_harness_schedule():
    from medssl.methods.unimiss_eval import MiTPlusSegNet, finetune_mit_segmentation
    from medssl.registry import BACKBONES

    torch.manual_seed(0)
    bb = BACKBONES.build("mit_plus", **SMALL)
    enc0 = {k: v.clone() for k, v in bb.encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in bb.decoder.state_dict().items()}
    rng = np.random.default_rng(1)
    data = [_volume(rng) for _ in range(2)]
    cfg = SegFinetuneConfig(steps=3, batch_size=1, warmup_steps=1, lr=1e-2, encoder_lr_scale=0.1)
    net = finetune_mit_segmentation(bb, [d[0] for d in data], [d[1] for d in data], num_classes=3, patch_size=CT,
                                    config=cfg, seed=0)
    assert not net.training
    x = torch.from_numpy(data[0][0])[None, None]
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 3, *CT) and torch.isfinite(out).all()
    net.train()
    shapes = [tuple(o.shape[2:]) for o in net(x)]  # deep supervision: main, conv1 level, token stages 3 and 2
    assert shapes == [CT, (16, 32, 32), (8, 16, 16), (4, 8, 8)]
    # both parts moved, the encoder less than the decoder (its learning rate is 0.1x)
    enc_step = max(float((v - enc0[k]).abs().max()) for k, v in net.encoder.state_dict().items() if v.is_floating_point())
    dec_keys = [k for k in dec0 if k.startswith("stages.") and k.endswith("attn.q.weight")]
    dec_step = max(float((net.decoder.state_dict()[k] - dec0[k]).abs().max()) for k in dec_keys)
    assert 0.0 < enc_step < dec_step
    assert isinstance(net, MiTPlusSegNet)


def test_mit_patch_is_the_data_sized_patch_on_the_decoder_grid():
    from medssl.methods.unimiss_eval import mit_patch_size
    from medssl.registry import BACKBONES

    plus = BACKBONES.build("mit_plus", **SMALL)
    mit = BACKBONES.build("mit_tiny", img_size_2d=64, img_size_3d=CT)
    cfg = SegFinetuneConfig()
    assert plus.input_multiple(3) == (4, 32, 32) and mit.input_multiple(3) == (16, 32, 32)
    assert mit_patch_size(plus, [(49, 55, 74)] * 2, CT, cfg) == (64, 64, 64)  # the harness gives (64, 64, 80)
    assert mit_patch_size(mit, [(49, 55, 74)] * 2, CT, cfg) == (64, 64, 64)
    assert mit_patch_size(plus, [(36, 60, 60)], CT, cfg) == (48, 64, 64)
    assert mit_patch_size(mit, [(36, 60, 60)], CT, cfg) == (48, 64, 64)
    assert mit_patch_size(plus, [(36, 60, 60)], CT, SegFinetuneConfig(patch="checkpoint")) == CT
    with torch.no_grad():  # the decoder restores it
        assert plus.forward_recon(torch.zeros(1, 1, 48, 64, 64))[0].shape == (1, 1, 48, 64, 64)


def test_mit_plus_width_and_depths_scale_it_and_the_default_is_the_authors():
    from medssl.backbones.mit_plus import MiTPlus

    small = MiTPlus(**SMALL)
    assert small.feature_channels == [8, 8, 16, 32, 40, 40] and small.embed_dim == 40
    assert [len(s.blocks) for s in small.encoder.stages] == [1, 1, 1, 1]
    quarter = MiTPlus(img_size_2d=64, img_size_3d=CT, width=0.25, depths=(1, 1, 1, 1))
    assert quarter.feature_channels == [8, 16, 32, 64, 80, 80]
    default = MiTPlus(img_size_2d=64, img_size_3d=CT)
    assert default.feature_channels == [32, 64, 128, 256, 320, 320]
    assert [len(s.blocks) for s in default.encoder.stages] == [1, 2, 4, 2]
    for bad in ({"width": 0}, {"depths": (1, 1, 1)}, {"decoder_depths": (1, 0, 1)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MiTPlus(img_size_2d=64, img_size_3d=CT, **bad)
    with torch.no_grad():
        rec, cls = small.forward_recon(torch.randn(2, 1, *CT))
    assert rec.shape == (2, 1, *CT) and cls.shape == (2, 40)
