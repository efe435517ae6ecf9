"""A Ray engine replica killed mid-run: alert, pause before the step's update, restart,
verified re-sync, and the run continues when the operator resumes. Real Ray, real vLLM."""

import subprocess
import sys
import threading
import time

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


def test_killed_replica_is_detected_restarted_resynced_and_resumed(tmp_path):
    env = backend_env(tmp_path / "h")  # short data dir: Ray's socket paths are length-limited
    proc = subprocess.Popen(RLC + ["run", "--headless", "--json", "--max-steps", "100000",
                                   "--set", "engine.backend=ray", "--set", "engine.replicas=1",
                                   "--set", "training.prompts_per_step=4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events, run_id, killed_at, resumed = [], None, None, False
    lock = threading.Lock()

    def read():
        for line in proc.stdout:
            with lock:
                events.append(decode_event(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait(pred, timeout=240, what=""):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with lock:
                for e in events:
                    if pred(e):
                        return e
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {[e.kind for e in events[-8:]]}")

    try:
        started = wait(lambda e: e.kind == "run_started", what="run_started")
        run_id = started.run_id
        assert "ray" in started.engine
        wait(lambda e: e.kind == "step_metrics" and e.step >= 5, what="5 steps")
        killed_at = time.time()
        subprocess.run(["pkill", "-9", "-f", "ray::EngineActor"], check=True)
        alert = wait(lambda e: e.kind == "alert" and e.rule == "engine_dead", what="engine_dead alert")
        assert alert.severity == "critical" and alert.ts - killed_at < 5.0
        resync = wait(lambda e: e.kind == "weights_synced" and "restarting" in e.detail, what="verified resync")
        assert resync.verified
        paused = wait(lambda e: e.kind == "state_changed" and e.state == "paused", what="paused")
        assert "engine failure" in paused.reason
        step_at_pause = paused.step
        time.sleep(1.5)
        with lock:
            assert max(e.step for e in events if e.kind == "step_metrics") == step_at_pause
        out = subprocess.run(RLC + ["ctl", run_id, "resume"], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        resumed = True
        wait(lambda e: e.kind == "step_metrics" and e.step >= step_at_pause + 3, what="steps after resume")
    finally:
        if run_id:
            subprocess.run(RLC + ["ctl", run_id, "stop"], env=env, capture_output=True, timeout=30)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert resumed and proc.returncode == 0
