"""A reward function failing on the run's last step: the update is skipped as on any step,
and the run's end says so ('completed 3 steps (1 update skipped: step 3; see the alerts)'),
also in `ls`/`status`, instead of a plain 'completed' (no boundary is left to take the pause)."""

import pytest

pytestmark = pytest.mark.integration

CALLS = {"n": 0}


def fails_on_the_third_call(prompts, completions, **kw):
    CALLS["n"] += 1
    if CALLS["n"] == 3:
        raise ValueError("the judge is down")
    return [float(len(c) == 4) for c in completions]


def test_a_failure_on_the_last_step_is_in_how_the_run_ended(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile
    from console import runs

    CALLS["n"] = 0
    profile = load_profile(None, run={"max_steps": 3, "checkpoint_every": 0},
                           training={"prompts_per_step": 4}, telemetry={"probe_every": 0},
                           task={"reward_funcs": [f"{__name__}:fails_on_the_third_call"]})
    run_dir = rlc_home / "runs" / "last-skip"
    ctl = Controller(profile, run_id="last-skip", run_dir=run_dir, profile_name="test",
                     store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    assert ctl.run() == 0
    assert CALLS["n"] == 3
    alerts = [e for e in events if e.kind == "alert" and e.rule == "reward_failed"]
    assert len(alerts) == 1 and alerts[0].step == 3
    final = [e for e in events if e.kind == "state_changed"][-1]
    assert final.state == "finished"
    assert final.reason == "completed 3 steps (1 update skipped: step 3; see the alerts)", final.reason
    info = runs.info("last-skip")
    assert info.state == "completed" and "1 update skipped: step 3" in info.describe()
