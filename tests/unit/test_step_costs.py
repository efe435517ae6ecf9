"""The step seam's per-step work, made cheap, keeps its meaning: the gradient guard (one fused
norm, the per-tensor pass only when it is not finite) and the group statistics (float
standard deviation instead of statistics' exact fractions)."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest
import torch

from backend.bus import EventBus
from backend.runstore import RunStore
from backend.settings import load_profile
from backend.training import report
from backend.training.step import StepLoop


class _Desk:
    def __init__(self) -> None:
        self.pauses: list[str] = []

    def request_pause(self, why: str) -> None:
        self.pauses.append(why)


def _loop(tmp_path) -> tuple[StepLoop, EventBus, _Desk]:
    bus = EventBus(RunStore(tmp_path / "events.db"))
    desk = _Desk()
    session = SimpleNamespace(trainer=SimpleNamespace(state=SimpleNamespace(global_step=3)))  # what step_now reads
    loop = StepLoop(load_profile(None), bus, desk, session=session, params={})
    return loop, bus, desk


def _model(grad_value: float) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    for prm in model.parameters():
        prm.grad = torch.full_like(prm, 0.1)
    model[1].weight.grad[0, 0] = grad_value
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_gradient_skips_the_update_and_names_the_tensor(tmp_path, bad):
    loop, bus, _ = _loop(tmp_path)
    model = _model(bad)
    loop.on_pre_optimizer_step(model)
    assert loop._skip_update and "1 tensors (e.g. 1.weight)" in loop._skip_update
    assert all(p.grad is None for p in model.parameters())  # AdamW skips the update
    alerts = [e for e in bus.store.read(0) if e.kind == "alert"]
    assert [a.rule for a in alerts] == ["non_finite"]


def test_finite_gradients_whose_norm_overflows_are_not_a_skip(tmp_path):
    loop, bus, _ = _loop(tmp_path)
    model = _model(3e38)  # finite in float32; its square (the norm) overflows to inf
    loop.on_pre_optimizer_step(model)
    assert loop._skip_update is None
    assert all(p.grad is not None for p in model.parameters())
    assert not list(bus.store.read(0))


def test_finite_gradients_pass(tmp_path):
    loop, _, _ = _loop(tmp_path)
    model = _model(0.5)
    loop.on_pre_optimizer_step(model)
    assert loop._skip_update is None and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("xs", [[0.1, 0.1, 0.1], [1.0, 0.0, 0.5, 0.25, 1.0, 1.0, 0.0, 0.75], [1e9, 1e9 + 1, 1e9 + 3], [-2.5, 3.0]])
def test_group_std_agrees_with_statistics(xs):
    assert report._group_std(xs) == pytest.approx(statistics.stdev(xs), rel=1e-12, abs=1e-15)


def test_one_reward_value_is_exactly_zero_std():
    assert report._group_std([0.1] * 8) == 0.0  # the console's zero-std filter and counts read it
    assert math.isclose(report._group_std([0.0, 1.0]), math.sqrt(0.5))


def test_the_group_std_is_the_one_the_advantages_are_divided_by():
    """TRL's advantages for [0, 0, 0, 1] (scale_rewards = "group"): (r - mean) / (nanstd + 1e-4),
    with nanstd Bessel-corrected; the std shown beside them must be that one."""
    import torch
    from trl.trainer.utils import nanstd

    xs = [0.0, 0.0, 0.0, 1.0]
    assert report._group_std(xs) == pytest.approx(float(nanstd(torch.tensor(xs))), rel=1e-6) == pytest.approx(0.5)
