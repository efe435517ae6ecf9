"""The event log's one format and its read-only reader (backend/protocol/eventlog.py), with the
real writer (backend/runstore.py) on the other side."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.protocol import encode_event
from backend.protocol import events as E
from backend.protocol.eventlog import (
    FORMAT_VERSION,
    EventLogCorrupt,
    EventLogError,
    EventLogMissing,
    EventLogReader,
    EventLogTooNew,
)
from backend.runstore import RunStore

ROOT = Path(__file__).resolve().parents[2]


def _sample_events() -> list:
    return [
        E.RunStarted(run_id="r", profile="p", profile_data={"sampling": {"temperature": 0.9}}, model="m",
                     task="t", engine="local", reward_functions=["f"], reward_weights=[1.0], params={"temperature": 0.9}),
        E.StateChanged(state="running", step=0),
        E.SampleGroup(step=1, group=0, prompt="a>", weight_version=1, reward_mean=0.5, reward_std=0.1,
                      completions=[E.Completion(text="aaaa", rewards={"f": 1.0, "g": None}, reward=1.0,
                                                advantage=0.5, length=4, truncated=False)]),
        E.StepMetrics(step=1, reward_mean=0.5, reward_std=0.1, rewards_by_function={"f": 0.5}, kl=None,
                      times=E.StepTimes(generate=1.0, total=2.5)),
        E.CommandResult(command_id="c1", command="set_params", status="accepted", step=1),
        E.ParamsApplied(command_id="c1", step=1, changed={"temperature": 0.7}, params={"temperature": 0.7}),
        E.LogLine(message="ünïcode ✓ and \"quotes\"\nnewline"),
    ]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_writer_to_reader(tmp_path):
    db = tmp_path / "run" / "events.db"
    store = RunStore(db)
    stored = store.append_many(_sample_events())
    store.append(E.LogLine(message="last"))
    store.close()
    with EventLogReader(db) as log:
        got = list(log.read())
        assert [e.seq for e in got] == list(range(len(stored) + 1))
        assert got[:-1] == stored  # every field, nested models included
        assert log.read_raw(0, 3) == [encode_event(e) for e in stored[:3]]  # as the wire sends them
        assert log.last("step_metrics") == stored[3]
        assert [e.kind for e in log.read(kinds=("params_applied", "command_result"))] == ["command_result", "params_applied"]
        assert [e.seq for e in log.read(2, 4)] == [2, 3]
        assert [e.seq for e in log.read(0, limit=2)] == [0, 1]
        assert log.last_seq() == 7 and log.next_seq == 8 and log.seqs() == list(range(8))
        assert log.newest_ts() == pytest.approx(max(e.ts for e in got))
        assert log.last("checkpoint_saved") is None and log.skipped == 0
    # the version is recorded in the file
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
    raw.close()
    # a readonly RunStore is the same reader
    ro = RunStore(db, readonly=True)
    assert isinstance(ro, EventLogReader) and not isinstance(ro, RunStore) and ro.next_seq == 8


def test_reader_on_a_live_log_being_appended(tmp_path):
    db = tmp_path / "events.db"
    store = RunStore(db)
    store.append(E.LogLine(message="first"))
    total = 400
    done = threading.Event()

    def write():
        for i in range(0, total, 8):
            store.append_many([E.LogLine(message=f"m{i + k}") for k in range(8)])
            time.sleep(0.002)
        done.set()

    reader = EventLogReader(db)  # opened once, kept open while the writer appends
    writer = threading.Thread(target=write)
    writer.start()
    seen_sizes = []
    while True:
        finished = done.is_set()
        got = [e.seq for e in reader.read()]
        assert got == list(range(len(got)))  # always a contiguous prefix: no gap, no half-written batch
        assert len(got) % 8 == 1  # batches are committed whole
        seen_sizes.append(len(got))
        if finished:
            break
    writer.join()
    assert seen_sizes[-1] == total + 1 and len(set(seen_sizes)) > 2  # it saw the log grow
    assert reader.last("log").message == f"m{total - 1}"
    # the writer was never blocked by the open reader: it can still append at once
    t0 = time.monotonic()
    store.append(E.LogLine(message="after"))
    assert time.monotonic() - t0 < 1.0 and reader.last_seq() == total + 1
    reader.close()
    store.close()


def test_missing_log_is_never_created(tmp_path):
    where = tmp_path / "nope" / "events.db"
    with pytest.raises(EventLogMissing, match="does not exist") as err:
        EventLogReader(where)
    assert isinstance(err.value, FileNotFoundError) and err.value.path == where
    assert not where.exists() and not where.parent.exists()
    with pytest.raises(EventLogMissing, match="not a file"):
        EventLogReader(tmp_path)  # a directory


def test_non_sqlite_file_is_refused_untouched(tmp_path):
    junk = tmp_path / "events.db"
    junk.write_text("this is a text file, not a database\n" * 50)
    before = _digest(junk)
    with pytest.raises(EventLogCorrupt, match="not a readable event log") as err:
        EventLogReader(junk)
    assert str(junk) in str(err.value)
    assert _digest(junk) == before
    with pytest.raises(EventLogCorrupt):  # and the backend will not append to it either
        RunStore(junk)
    assert _digest(junk) == before


def test_other_sqlite_database_is_not_an_event_log(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(EventLogCorrupt, match="not an rl-console event log.*users"):
        EventLogReader(other)
    wrong = tmp_path / "wrong.db"
    con = sqlite3.connect(wrong)
    con.execute("CREATE TABLE events (seq INTEGER, payload TEXT)")
    con.commit()
    con.close()
    with pytest.raises(EventLogCorrupt, match="columns"):
        EventLogReader(wrong)


def test_newer_format_is_refused_by_reader_and_writer(tmp_path):
    db = tmp_path / "events.db"
    RunStore(db).append(E.LogLine(message="x"))
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    con.commit()
    con.close()
    before = _digest(db)
    with pytest.raises(EventLogTooNew, match=f"format {FORMAT_VERSION + 1}.*newer rl-console"):
        EventLogReader(db)
    with pytest.raises(EventLogTooNew):
        RunStore(db)
    assert _digest(db) == before


def test_log_written_before_the_version_was_recorded_reads(tmp_path):
    """Logs from before FORMAT_VERSION have user_version 0 and the same table."""
    db = tmp_path / "events.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);")
    ev = E.LogLine(message="old", seq=0)
    con.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (0, ev.ts, ev.kind, encode_event(ev).decode().strip()))
    con.commit()
    con.close()
    assert [e.message for e in EventLogReader(db).read()] == ["old"]
    store = RunStore(db)  # and a resumed backend appends to it
    assert store.append(E.LogLine(message="new")).seq == 1


def test_an_event_this_side_cannot_decode_is_skipped_and_counted(tmp_path):
    """A kind added by a newer backend in the same format: readers skip it as the live client does."""
    db = tmp_path / "events.db"
    store = RunStore(db)
    store.append(E.LogLine(message="a"))
    store._db.execute("INSERT INTO events VALUES (1, 0.0, 'from_the_future', '{\"v\":1,\"seq\":1,\"ts\":0.0,\"kind\":\"from_the_future\"}')")
    store.close()
    RunStore(db).append(E.LogLine(message="b"))  # a writer opening the log continues after it
    with EventLogReader(db) as log:
        assert [e.seq for e in log.read()] == [0, 2]
        assert log.skipped == 1 and "seq 1" in log.last_skipped and "from_the_future" in log.last_skipped
        assert b"from_the_future" in log.read_raw(1, 2)[0]


def test_the_console_never_writes_a_log(tmp_path, monkeypatch):
    """ls/status/replay read a finished run's log without changing a byte of it, and a run
    directory without a log stays without one."""
    import asyncio

    from console import runs

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    rdir = tmp_path / "runs" / "r-done"
    store = RunStore(rdir / "events.db")
    store.append_many(_sample_events() + [E.StateChanged(state="finished", reason="completed 1 steps", step=1)])
    store.close()
    (rdir / "run.json").write_text(json.dumps({"run_id": "r-done", "pid": 0, "created": time.time()}))
    os.chmod(rdir / "events.db", 0o444)  # a log the console may only read
    before = (_digest(rdir / "events.db"), os.stat(rdir / "events.db").st_mtime_ns)

    info = runs.info("r-done")
    assert info.state == "completed" and info.step == 1

    async def replay():
        src = runs.ReplaySource("r-done")
        hello = await src.connect()
        return hello.last_seq, [e.seq async for e in src.events()], src.read_range(2, 4)

    last, seqs, rng = asyncio.run(replay())
    assert last == 7 and seqs == list(range(8)) and [e.seq for e in rng] == [2, 3]
    assert (_digest(rdir / "events.db"), os.stat(rdir / "events.db").st_mtime_ns) == before

    empty = tmp_path / "runs" / "r-new"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"run_id": "r-new", "pid": 0, "state": "starting"}))
    assert runs.info("r-new").step == 0
    assert asyncio.run(runs.ReplaySource("r-new").connect()).last_seq == -1
    assert not (empty / "events.db").exists()


def test_console_reports_an_unreadable_log_instead_of_failing(tmp_path, monkeypatch):
    from console import runs

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    rdir = tmp_path / "runs" / "r-bad"
    rdir.mkdir(parents=True)
    (rdir / "events.db").write_bytes(b"\x00garbage" * 100)
    (rdir / "run.json").write_text(json.dumps({"run_id": "r-bad", "pid": 0}))
    info = runs.info("r-bad")
    assert "not a readable event log" in info.reason and str(rdir / "events.db") in info.reason
    with pytest.raises(EventLogError):
        runs.open_log("r-bad")


def test_empty_file_reads_as_an_empty_log_until_the_writer_creates_it(tmp_path):
    db = tmp_path / "events.db"
    db.touch()  # the instant between the writer creating the file and its schema
    log = EventLogReader(db)
    assert list(log.read()) == [] and log.last_seq() == -1
    RunStore(db).append(E.LogLine(message="now"))
    assert [e.message for e in log.read()] == ["now"]


def test_eventlog_imports_no_training_stack():
    code = ("import sys, backend.protocol.eventlog, console.runs\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch','vllm','trl','ray','transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_resume_refuses_a_log_it_cannot_read(tmp_path, monkeypatch):
    """`run --resume` on a newer-format or corrupt log says why and leaves the log as it is."""
    from backend.__main__ import ResumeError, prepare_resume

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    db = tmp_path / "runs" / "r" / "events.db"
    store = RunStore(db)
    store.append(E.LogLine(message="x"))
    store.close()  # the writer is gone (its close checkpoints the WAL into the file)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    con.commit()
    con.close()
    before = _digest(db)
    with pytest.raises(ResumeError, match="cannot resume r: .*newer rl-console"):
        prepare_resume("r", {})
    assert _digest(db) == before
    db.write_bytes(b"garbage" * 200)
    before = _digest(db)
    with pytest.raises(ResumeError, match="not a readable event log"):
        prepare_resume("r", {})
    assert _digest(db) == before
