"""run.json under concurrent writers, and the one-backend-per-run lock (real files, real processes)."""

import json
import os
import subprocess
import sys
import threading

import pytest

from backend.protocol.paths import RunLocked, lock_run, run_locked
from backend.runstore import read_run_meta, write_run_meta


def test_run_meta_survives_concurrent_writers(tmp_path):
    """The server thread (pausing) and the training thread (paused/running) write at once."""
    write_run_meta(tmp_path, run_id="r", state="starting")
    errors = []

    def writer(name):
        try:
            for i in range(300):
                write_run_meta(tmp_path, state=f"{name}-{i}", **{name: i})
        except Exception as exc:  # FileNotFoundError on a shared temp file was the bug
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("server", "training", "alerts")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    meta = json.loads((tmp_path / "run.json").read_text())  # valid JSON, nothing doubled
    assert meta["run_id"] == "r" and meta["server"] == meta["training"] == meta["alerts"] == 299
    assert not list(tmp_path.glob("*.tmp"))
    assert read_run_meta(tmp_path) == meta


HOLD = "import sys, time; from pathlib import Path; from backend.protocol.paths import lock_run; lock_run(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"


def test_one_backend_per_run_and_the_lock_dies_with_its_process(tmp_path):
    rdir = tmp_path / "run-1"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(rdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_locked(rdir)
        with pytest.raises(RunLocked, match=f"already hosted by backend pid {holder.pid}"):
            lock_run(rdir)
    finally:
        holder.kill()  # kill -9: no clean-up code runs
        holder.wait()
    assert not run_locked(rdir)
    fd = lock_run(rdir)  # a crashed run can be resumed at once
    assert run_locked(rdir)  # flock is per open file: the check's own descriptor sees our lock
    os.close(fd)
    assert not run_locked(rdir)
