"""A step's compile time comes from torch's own record of its frame compiles: a real
torch.compile here (a small function, on CPU), not a stand-in."""

from __future__ import annotations

import torch

from backend.training import compiletime


def test_the_clock_counts_a_compile_and_not_a_cached_call():
    clock = compiletime.CompileClock()
    f = torch.compile(lambda x: torch.nn.functional.gelu(x) * 3 + x.sin(), dynamic=True)
    f(torch.randn(5))
    first = clock.lap()
    assert first > 0.05  # it compiled (seconds, on CPU)
    f(torch.randn(7))  # dynamic: another length, no new compile
    assert clock.lap() < 0.01


def test_the_forward_and_backward_compiles_are_counted_whenever_torch_runs_them():
    """Torch compiles the backward at its first use, or with the forward (as it does here once
    transformers is imported): either way the clock has the whole first call's compile."""
    import time

    clock = compiletime.CompileClock()
    model = torch.compile(torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 32)))
    t0 = time.perf_counter()
    model(torch.randn(4, 32)).sum().backward()
    wall = time.perf_counter() - t0
    spent = clock.lap()
    assert spent > 0.05 and spent >= 0.8 * wall, (spent, wall)
    t0 = time.perf_counter()
    model(torch.randn(4, 32)).sum().backward()  # compiled: nothing more to compile
    assert clock.lap() < 0.01


def test_the_step_line_and_the_split_carry_it():
    from backend.protocol.events import StepMetrics, StepTimes
    from console.state import describe

    m = StepMetrics(step=12, reward_mean=0.5, reward_std=0.1, times=StepTimes(total=102.6, train=102.4, compile=101.9))
    assert "(compiling 101.9s)" in describe(m)[0]
    quiet = m.model_copy(update={"times": StepTimes(total=0.3, train=0.2)})
    assert "compiling" not in describe(quiet)[0]


def test_the_headless_line_says_when_a_step_was_compiling():
    from backend.__main__ import HeadlessPrinter
    from backend.protocol.events import StepMetrics, StepTimes

    p = HeadlessPrinter(json_mode=False)
    slow = StepMetrics(step=12, reward_mean=0.5, reward_std=0.1, times=StepTimes(total=102.6, train=102.4, compile=101.9))
    assert "train 102400ms (compiling 101900ms) sync" in p.render(slow)
    assert "compiling" not in p.render(slow.model_copy(update={"times": StepTimes(total=0.3, train=0.2)}))
