"""End to end: the real `rl-console` binary in tmux against the real embedded default run."""

import json
import re
import shutil
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, backend_env

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup.sh --dev installs it)")]
SESSION = "rlc-e2e"


def tmux(*args, check=True):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=check)


def screen(target=SESSION) -> str:
    return tmux("capture-pane", "-p", "-t", target).stdout


def wait_screen(pattern, timeout=120, target=SESSION):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = screen(target)
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.3)
    raise AssertionError(f"never saw {pattern!r}; screen:\n{screen(target)}")


def header_step(target=SESSION) -> int:
    return int(wait_screen(r"step (\d+)", target=target).group(1))


def test_console_pause_edit_detach_attach(rlc_home, tmp_path):
    env = backend_env(tmp_path / "home")
    rlc = f"{sys.executable} -m console.cli"
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k in ("RLC_HOME", "PYTHONPATH"))
    tmux("kill-session", "-t", SESSION, check=False)
    tmux("new-session", "-d", "-s", SESSION, "-x", "100", "-y", "30",
         f"cd {ROOT} && env {exports} {rlc} run --max-steps 100000 --set training.prompts_per_step=4; sleep 60")
    status = lambda: json.loads(subprocess.run([sys.executable, "-m", "console.cli", "status", "latest", "--json"],  # noqa: E731
                                               env=env, capture_output=True, text=True).stdout)
    try:
        wait_screen(r"STARTING|starting")  # something alive at once, while the engine starts
        wait_screen(r"RUNNING\s+step (?:[5-9]|\d\d+)\b", timeout=180)

        tmux("send-keys", "-t", SESSION, "p")
        wait_screen(r"PAUSED\s+step \d+")
        paused = header_step()
        time.sleep(2.0)
        assert header_step() == paused, "steps advanced while paused"

        tmux("send-keys", "-t", SESSION, "e")
        wait_screen(r"temperature\s+>0…2\s+1\.0")
        tmux("send-keys", "-t", SESSION, "0.7", "Enter")
        wait_screen(r"temperature\s+>0…2\s+0\.7\s+.*applied at step \d+")
        tmux("send-keys", "-t", SESSION, "Escape")
        time.sleep(0.5)
        tmux("send-keys", "-t", SESSION, "p")
        wait_screen(r"RUNNING\s+step (\d+)")
        t0 = time.monotonic()
        while header_step() <= paused and time.monotonic() - t0 < 30:
            time.sleep(0.3)
        assert header_step() > paused

        tmux("send-keys", "-t", SESSION, "q")
        wait_screen(r"detached from \S+; it keeps running")
        before = status()["step"]
        time.sleep(2.0)
        after = status()
        assert after["alive"] and after["state"] == "running" and after["step"] > before

        tmux("new-window", "-t", SESSION, f"cd {ROOT} && env {exports} {rlc} attach; sleep 30")
        target = f"{SESSION}:1"
        wait_screen(r"RUNNING\s+step \d+", target=target)
        wait_screen(r"step 1\s", target=target)  # the chart starts at step 1: the whole history came back
        tmux("send-keys", "-t", target, "l")
        received = int(wait_screen(r"events · \S+ \(k\) · (\d+) received", target=target).group(1))
        assert received > 100  # history (every step since step 1) plus live events

        # stop from the console: a dialog says what stopping does; y = checkpoint first, then stop
        tmux("send-keys", "-t", target, "x")
        wait_screen(r"save a checkpoint first", target=target)
        tmux("send-keys", "-t", target, "y")
        wait_screen(r"STOPPED\s+step \d+", target=target, timeout=120)
        wait_screen(r"the run stopped at step \d+", target=target)  # on the status line
        tmux("send-keys", "-t", target, "p")  # a control on an ended run says why instead of sending
        wait_screen(r"the run stopped at step \d+: pause not sent", target=target)
        final, t0 = status(), time.monotonic()
        while final.get("alive") and time.monotonic() - t0 < 30:  # the backend exits after its last event
            time.sleep(0.3)
            final = status()
        assert final["state"] == "stopped" and not final["alive"], final
    finally:
        # the re-attached console still controls the run: take control to stop it, and make sure
        # no backend outlives the test
        stop = None
        now = status()
        if now.get("alive") and now.get("state") not in ("stopping", "stopped"):  # (else stopped from the console above)
            stop = subprocess.run([sys.executable, "-m", "console.cli", "ctl", "latest", "stop", "--take"], env=env,
                                  capture_output=True, text=True)
        tmux("kill-session", "-t", SESSION, check=False)
        info = status()
        t0 = time.monotonic()
        while info.get("alive") and time.monotonic() - t0 < 30:
            time.sleep(0.5)
            info = status()
        if info.get("alive") and info.get("pid"):
            os.kill(info["pid"], signal.SIGKILL)
        assert stop is None or stop.returncode == 0, stop.stdout + stop.stderr
