"""Real runs that several test files only read: made once per session, on the session's data dir.

Each costs an engine start (~15-25 s on the 2-core CPU box); the tests that read them assert
the same things as when each made its own."""

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

RLC = [sys.executable, "-m", "console.cli"]
SMALL = ["--set", "training.prompts_per_step=2", "--set", "task.warmup_steps=0"]
# the synchronous reference of tests/integration/test_resume.py and test_overlap.py: same seed,
# 9 steps, a checkpoint every 3 (all 9 steps are inside the default 15-step warm-up)
REFERENCE = ["--max-steps", "9", "--set", "run.checkpoint_every=3", "--set", "training.prompts_per_step=4"]


@pytest.fixture(scope="session")
def finished_compare_run(rlc_home) -> str:
    """A short finished run at temperature 0.5 (3 steps), the `B` of the compare tests."""
    out = subprocess.run(RLC + ["run", "--headless", "--max-steps", "3", "--set", "sampling.temperature=0.5"] + SMALL,
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return next(line.split()[1].rstrip(":") for line in out.stdout.splitlines() if line.startswith("run "))


@dataclass(frozen=True)
class SyncReference:
    args: list[str]  # `backend run` arguments after `--headless --json --run-id ID`
    prompts: dict[int, list[str]]  # step -> the prompts the run trained that step on
    run_dir: Path  # the finished run's directory (test_data_dir.py copies it: a cleanly closed log)


@pytest.fixture(scope="session")
def sync_reference(rlc_home) -> SyncReference:
    """An uninterrupted synchronous run of REFERENCE."""
    run_id = f"sync-ref-{str(time.time_ns())[-8:]}"
    ref = subprocess.run([sys.executable, "-m", "backend", "run", "--headless", "--json", "--run-id", run_id, *REFERENCE],
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out: dict[int, list[str]] = {}
    for line in ref.stdout.splitlines():
        if line.startswith("{") and (e := decode_event(line)).kind == "sample_group":
            out.setdefault(e.step, []).append(e.prompt)
    assert sorted(out) == list(range(1, 10))
    assert len({tuple(v) for v in out.values()}) == 9, "steps must see different prompts for the check to mean anything"
    return SyncReference(list(REFERENCE), out, rlc_home / "runs" / run_id)


def _rlc(args, home, timeout=300):
    return subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout)


async def _steer_with_the_view_open(home, run_b) -> dict:
    """A: temperature 0.9, detached; after step 2 the compare view of A and B opens, A is paused,
    `ctl set temperature=0.7`, resumed, `compare --json` read while A trains, then A is stopped.
    Returns what the view and the CLI saw on the way (test_compare_view_live.py and
    test_compare.py assert on it)."""
    import asyncio
    import json

    from console import cli
    from console.compare_app import CompareApp
    from console.widgets.overlay_chart import OverlayChart

    async def until(pilot, pred, timeout=240.0, what="condition"):
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            await pilot.pause(0.2)

    out = _rlc(["run", "--detach", "--max-steps", "100000", "--set", "sampling.temperature=0.9"] + SMALL, home, timeout=180)
    assert out.returncode == 0, out.stderr
    run_a = out.stdout.split()[1]
    seen: dict = {"run_a": run_a, "run_b": run_b}
    status = lambda: json.loads(_rlc(["status", run_a, "--json"], home).stdout)  # noqa: E731
    ctl = lambda *args: asyncio.to_thread(_rlc, ["ctl", run_a, *args], home)  # noqa: E731
    try:
        t0 = time.monotonic()
        while status()["step"] < 2:
            assert time.monotonic() - t0 < 240, "the live run made no 2 steps"
            time.sleep(0.3)
        app = CompareApp(cli.compare_feed([run_a, run_b]), refresh_s=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            seen["opened"] = dict(app.report["runs"][0])
            assert (await ctl("pause")).returncode == 0
            await until(pilot, lambda: app.report["runs"][0]["state"] == "paused", what="paused, in the view")
            seen["paused_at_view"] = app.report["runs"][0]["steps"][-1]
            st = status()
            seen["paused_status"] = (st["state"], st["step"])
            answer = await ctl("set", "temperature=0.7", "--json")
            assert answer.returncode == 0, answer.stdout + answer.stderr
            seen["set_id"] = set_id = json.loads(answer.stdout)["command_id"]
            assert (await ctl("resume")).returncode == 0

            def applied():
                return next((c for c in app.report["commands"] if c["command_id"] == set_id and c["status"] == "applied"),
                            None)

            paused_at = seen["paused_at_view"]
            await until(pilot, lambda: applied() is not None and app.report["runs"][0]["steps"][-1] >= paused_at + 2,
                        what="the set and two new steps in the view")
            seen["applied"] = applied()
            chart = app.query_one(OverlayChart)
            seen["marks"] = {(m.letter, m.step) for m in chart.marks}
            seen["axis"], seen["axis_steps"] = list(chart.axis), list(app.report["steps"])
            live = await asyncio.to_thread(_rlc, ["compare", run_a, run_b, "--json"], home)  # A is still training
            seen["live_compare"] = (live.returncode, live.stdout, live.stderr)
            assert (await ctl("stop")).returncode == 0
            await until(pilot, lambda: not app.report["runs"][0]["live"], what="the run's end")
            seen["ended"] = dict(app.report["runs"][0])
            reads = app.reads
            await pilot.pause(1.5)
            seen["reads"] = (reads, app.reads)  # no live run: no more reading
            seen["shown"] = app.report
    finally:
        _rlc(["ctl", run_a, "stop"], home)
    t0 = time.monotonic()
    while status()["alive"] is not False:
        assert time.monotonic() - t0 < 120, "the stopped run's process did not exit"
        time.sleep(0.3)
    return seen


@pytest.fixture(scope="session")
def steered_compare_pair(rlc_home, finished_compare_run) -> dict:
    """One live run steered while the compare view is open (see _steer_with_the_view_open), next
    to the finished B: test_compare.py and test_compare_view_live.py both read it."""
    import asyncio

    return asyncio.run(_steer_with_the_view_open(rlc_home, finished_compare_run))


@pytest.fixture(scope="session")
def killed_run():
    """A run (`killed`) SIGKILLed after step 3, before any checkpoint (checkpoint_every=0): its
    -wal holds events the main file does not have. In a data dir of its own; users copy the run's
    directory (files as they are, WAL included; not its dead socket) and work on the copy."""
    import shutil
    import tempfile

    from backend.protocol.eventlog import EventLogError, EventLogReader

    home = Path(tempfile.mkdtemp(prefix="rlc-killed-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "run", "--run-id", "killed", "--max-steps", "100000",
         "--set", "run.checkpoint_every=0", "--set", "task.warmup_steps=5"],
        env=backend_env(home), stdout=subprocess.DEVNULL, stderr=open(home / "killed.err", "wb"), start_new_session=True)
    db = home / "runs" / "killed" / "events.db"

    def step() -> int:
        try:
            with EventLogReader(db) as r:
                m = r.last("step_metrics")
                return m.step if m else 0
        except EventLogError:
            return 0

    try:
        t0 = time.monotonic()
        while step() < 3:
            assert proc.poll() is None, (home / "killed.err").read_text()[-2000:]
            assert time.monotonic() - t0 < 300, "the run did not reach step 3"
            time.sleep(0.3)
    finally:
        proc.kill()
    proc.wait(30)
    yield home / "runs" / "killed"
    shutil.rmtree(home, ignore_errors=True)
