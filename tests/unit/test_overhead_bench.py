"""bench/overhead.py's turns: two real processes take turns (SIGSTOP/SIGCONT on their process
groups), never run at once, and a step that a turn cut in two is not counted, so the time a
process spent stopped never shows up as step time."""

import sys

import pytest

from bench import overhead

STEPPER = "import time\nfor i in range({n}):\n    time.sleep({dt})\n    print('@@step', i, flush=True)\n"


def _child(name: str, n: int, dt: float) -> overhead.Child:
    return overhead.Child(name, [sys.executable, "-c", STEPPER.format(n=n, dt=dt)], None, lambda line: line.startswith("@@step "))


def test_two_processes_take_turns_and_cut_steps_are_dropped(monkeypatch):
    monkeypatch.setattr(overhead, "WARMUP", 2)
    a, b = _child("a", 60, 0.05), _child("b", 60, 0.03)
    overhead.interleaved([a, b], block_s=0.4)
    a.finish()
    b.finish()
    assert len(a.windows) >= 3 and len(b.windows) >= 3, "each ran in several turns"
    turns = sorted([(s, e, "a") for s, e in a.windows] + [(s, e, "b") for s, e in b.windows])
    for (_, e1, n1), (s2, _, n2) in zip(turns, turns[1:]):
        assert e1 <= s2, f"{n1}'s turn ran into {n2}'s"
    names = [n for _, _, n in turns]
    assert all(x != y for x, y in zip(names[:-2], names[1:-1])), f"turns alternate while both are alive: {names}"
    for child, dt in ((a, 0.05), (b, 0.03)):
        wall, cpu, wait = child.steps()
        assert len(wall) == len(cpu) == len(wait)
        assert 20 <= len(wall) < 59 - 2, f"{child.name}: the steps cut by a turn are dropped, the others kept ({len(wall)})"
        assert max(wall) < dt + 0.1, f"{child.name}: a stopped interval was counted as a step ({max(wall):.3f} s)"
        assert min(wall) >= dt * 0.9


def test_variant_arguments_parse_and_refuse_clearly():
    assert overhead.parse_variant("lean=telemetry.probe_every=0,run.checkpoint_every=0") == (
        "lean", ["telemetry.probe_every=0", "run.checkpoint_every=0"])
    with pytest.raises(Exception, match="NAME=SECTION.FIELD=VALUE"):
        overhead.parse_variant("lean")


def test_the_bare_loop_alone_reports_its_steps_after_the_warm_up(monkeypatch):
    # bench/feature_cost.py runs (a) on its own through this
    monkeypatch.setattr(overhead, "WARMUP", 3)
    wall, cpu, wait = overhead.run_bare(12, None, cmd=[sys.executable, "-c", STEPPER.format(n=12, dt=0.02)])
    assert len(wall) == len(cpu) == len(wait) == 12 - 3
    assert all(0.018 <= w < 0.2 for w in wall), wall
