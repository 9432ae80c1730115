"""Schedules against the plain formula; optimiser groups; LARS against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.config import OptimConfig, SchedulesConfig
from medssl.train.optim import LARS, apply_schedule, build_optimizer
from medssl.train.schedules import schedule_values, warmup_cosine


def plain(step, total, peak, warm, final):
    if step < warm:
        return peak * step / warm
    t = (step - warm) / (total - warm)
    return final + (peak - final) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


@pytest.mark.parametrize("warm", [0, 1, 7])
def test_warmup_cosine_matches_formula(warm):
    total, peak, final = 50, 0.3, 0.01
    got = [warmup_cosine(s, total_steps=total, peak=peak, warmup_steps=warm, final=final) for s in range(total + 3)]
    want = [plain(s, total, peak, warm, final) for s in range(total + 3)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[warm] == pytest.approx(peak)
    assert got[-1] == pytest.approx(final)


def test_ema_momentum_and_teacher_temp_schedules():
    s = SchedulesConfig(warmup_steps=2, ema_momentum=0.99, ema_momentum_end=1.0, teacher_temp=0.07, teacher_temp_start=0.04, teacher_temp_warmup_steps=10, weight_decay_end=0.4)
    o = OptimConfig(lr=1.0, weight_decay=0.04)
    total = 100
    for step in (0, 5, 10, 50, 99):
        v = schedule_values(step, total_steps=total, optim=o, schedules=s)
        # BYOL: tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2
        assert v["ema_momentum"] == pytest.approx(1 - (1 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2)
        assert v["teacher_temp"] == pytest.approx(0.04 + 0.03 * min(step, 10) / 10)
        assert v["weight_decay"] == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * step / total)) / 2)
    assert "ema_momentum" not in schedule_values(0, total_steps=10, optim=o, schedules=SchedulesConfig())


def test_bad_schedule_arguments_name_the_argument():
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine(0, total_steps=0, peak=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, total_steps=5, peak=1.0, warmup_steps=-1)


def _groups():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(3))
    return w, b, [{"params": [w], "weight_decay": 0.1, "apply_wd": True}, {"params": [b], "weight_decay": 0.0, "apply_wd": False}]


def test_apply_schedule_keeps_wd_zero_for_no_decay_groups():
    w, b, groups = _groups()
    opt = build_optimizer(groups, OptimConfig(name="adamw"))
    apply_schedule(opt, {"lr": 0.25, "weight_decay": 0.3})
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert isinstance(build_optimizer(_groups()[2], OptimConfig(name="sgd")), torch.optim.SGD)


def test_lars_step_matches_hand_computation():
    w, b, groups = _groups()
    w0, b0 = w.detach().clone(), b.detach().clone()
    gw, gb = torch.randn(3, 4), torch.randn(3)
    w.grad, b.grad = gw.clone(), gb.clone()
    lr, wd, eta, mom = 0.5, 0.1, 0.02, 0.9
    opt = LARS(groups, lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=eta)
    opt.param_groups[1]["weight_decay"] = 0.0
    opt.step()
    trust = eta * w0.norm() / (gw.norm() + wd * w0.norm())
    torch.testing.assert_close(w.detach(), w0 - lr * trust * (gw + wd * w0))
    torch.testing.assert_close(b.detach(), b0 - lr * gb)  # no adaptation for apply_wd False
    # second step: momentum buffer carries the first update
    w.grad = gw.clone()
    b.grad = gb.clone()
    w1 = w.detach().clone()
    opt.step()
    trust1 = eta * w1.norm() / (gw.norm() + wd * w1.norm())
    v = mom * lr * trust * (gw + wd * w0) + lr * trust1 * (gw + wd * w1)
    torch.testing.assert_close(w.detach(), w1 - v)


def test_larc_clips_the_local_rate():
    w, b, groups = _groups()
    w0 = w.detach().clone()
    w.grad = torch.full_like(w, 1e-6)  # tiny gradient: LARS trust ratio would be huge
    groups[0]["weight_decay"] = 0.0
    opt = LARS(groups[:1], lr=0.1, momentum=0.0, weight_decay=0.0, trust_coefficient=1.0, clip=True)
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * 1e-6 * torch.ones_like(w0))


def test_unknown_optimiser_is_a_config_error():
    from medssl.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.name"):
        build_optimizer(_groups()[2], OptimConfig(name="adam-ish"))
