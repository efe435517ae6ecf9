"""bench/overhead.py's turns: two real processes take turns (SIGSTOP/SIGCONT on their process
groups), never run at once, and a step that a turn cut in two is not counted, so the time a
process spent stopped never shows up as step time."""

import statistics
import sys

import pytest

from bench import overhead

STEPPER = "import time\nfor i in range({n}):\n    time.sleep({dt})\n    print('@@step', i, flush=True)\n"


def _child(name: str, n: int, dt: float) -> overhead.Child:
    return overhead.Child(name, [sys.executable, "-c", STEPPER.format(n=n, dt=dt)], None, lambda line: line.startswith("@@step "))


def test_two_processes_take_turns_and_cut_steps_are_dropped(monkeypatch):
    monkeypatch.setattr(overhead, "WARMUP", 2)
    a, b = _child("a", 60, 0.05), _child("b", 60, 0.03)
    block_s = 0.4
    overhead.interleaved([a, b], block_s=block_s)
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
        # A step line is timed when the bench's reader gets it, so on a loaded box one step can read
        # long and the next short (seen in CI: 0.108 s then 0.004 s for 0.03 s steps); a stopped
        # interval (the other's whole turn, block_s) would read longer than any such lag.
        assert max(wall) < block_s, f"{child.name}: a stopped interval was counted as a step ({max(wall):.3f} s)"
        assert dt * 0.9 <= statistics.median(wall) < dt + 0.05, f"{child.name}: median step {statistics.median(wall):.3f} s"


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
    # timed as the bench reads each line: one step can read short after a late one (see above)
    assert all(w < 0.2 for w in wall) and 0.018 <= statistics.median(wall) < 0.05, wall
