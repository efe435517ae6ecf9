"""SIGTERM (a `kill`, a job scheduler's timeout) stops a run cleanly at the next step
boundary, checkpoint first, and the run's log says what stopped it: the stop command carries
the signal's name instead of a random id that reads like an operator's command."""

import signal
import subprocess
import sys
import time

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration


def test_sigterm_stops_at_a_boundary_with_a_checkpoint_and_says_so(rlc_home):
    env = backend_env(rlc_home)
    run_id = f"sigterm-{str(time.time_ns())[-8:]}"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--headless", "--json", "--run-id", run_id,
                             "--max-steps", "500", "--set", "telemetry.probe_every=0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = []
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            ev = decode_event(line)
            events.append(ev)
            if ev.kind == "step_metrics" and ev.step == 2:
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
    finally:
        proc.kill()
    stop = [e for e in events if e.kind == "command_result" and e.command == "stop"]
    assert [(e.command_id, e.status) for e in stop][-1] == ("SIGTERM", "applied"), stop
    final = [e for e in events if e.kind == "state_changed"][-1]
    assert final.state == "finished" and final.reason.startswith("stopped at step")
    assert any(e.kind == "checkpoint_saved" and e.step == final.step for e in events)
    assert final.step < 500


def test_ctrl_c_while_the_engine_starts_says_what_happens_and_stops_cleanly(rlc_home):
    """An operator's first Ctrl-C during start-up is answered at once (the stop itself waits for
    the engine), and the run ends stopped at step 0, not crashed."""
    env = backend_env(rlc_home)
    run_id = f"sigint-{str(time.time_ns())[-8:]}"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--headless", "--run-id", run_id, "--max-steps", "500"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "engine: starting vLLM" in line:
                proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        proc.kill()
    out = "\n".join(lines)
    said = next(i for i, line in enumerate(lines) if line.startswith("rl-console: stopping"))
    assert lines[said] == "rl-console: stopping once the engine is up (no step has run yet); Ctrl-C again exits at once", out
    assert not any(line.startswith("step ") for line in lines), out
    assert "[finished] stopped at step 0" in out, out
