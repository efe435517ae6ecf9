"""Durable per-run event log (SQLite, WAL): append with contiguous seq, read from a seq.

The on-disk format and the reader are `backend.protocol.eventlog` (shared with the console).

One writer (the backend process); any number of readers (attach, replay, `ls`). Every
event is stored in the protocol's own JSON encoding, so replay decodes what the live
socket would have sent.

A log file deleted (or replaced) under a live run: every append first checks that the file
at the path is still the one the writer holds open. If it is not, nothing is lost: the
writer still holds the whole log, merges its WAL into it and copies it with SQLite's backup
API into a new file at the path (a file someone put there instead is kept beside it), then
goes on writing there, and says so through `on_replaced` (the backend raises a critical
alert and pauses).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.protocol.codec import encode_event
from backend.protocol.eventlog import INSERT, EventLogReader, init_writer


class RunStore(EventLogReader):
    """The writer of a run's event log; reads through the same queries as every reader.

    `RunStore(path, readonly=True)` is a plain `EventLogReader` (it never creates the file).
    The format (table, columns, version, row <-> event) is `backend.protocol.eventlog`'s.
    """

    def __new__(cls, path: str | Path, *, readonly: bool = False, **_: Any) -> Any:
        if readonly:
            return EventLogReader(path)
        return super().__new__(cls)

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 on_replaced: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.skipped = 0
        self.last_skipped = ""
        self.on_replaced = on_replaced  # called (under the store's lock: hand it off) after a recreation
        self.replaced: list[str] = []  # what happened, each time the file had to be recreated
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            init_writer(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        self._file = self._identity()
        self._ready = True
        self._next = self.last_seq() + 1
        self._frames: dict[int, tuple[Any, bytes]] = {}  # seq -> (event, wire frame) of the newest append

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at the path; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _ensure_file(self) -> None:
        """Under `_lock`: the file at the path must be the one this writer holds open."""
        now = self._identity()
        if now == self._file:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if now is None:
            what = f"{self.path} was deleted while the run was writing it"
            kept = ""
        else:  # someone put another file there: keep it, beside the recreated log
            aside = self.path.with_name(f"{self.path.name}.found-{stamp}")
            os.replace(self.path, aside)
            what = f"{self.path} was replaced by another file while the run was writing it"
            kept = f"; the file found there was moved to {aside.name}"
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the file still held open
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.recovering")
        tmp.unlink(missing_ok=True)
        dst = sqlite3.connect(str(tmp))
        try:
            self._db.backup(dst)
        finally:
            dst.close()
        self._db.close()
        for side in ("-wal", "-shm"):  # the lost file's (readers may keep them open): never the new one's
            self.path.with_name(self.path.name + side).unlink(missing_ok=True)
        os.replace(tmp, self.path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        init_writer(self._db, self.path)
        self._file = self._identity()
        rows = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        message = f"{what}; recreated it from the open log ({rows} events, nothing lost){kept}"
        self.replaced.append(message)
        if self.on_replaced is not None:
            try:
                self.on_replaced(message)
            except Exception:  # the log is safe either way
                pass

    def check_file(self) -> None:
        """Recreate the log at its path if it was deleted or replaced (see the module doc)."""
        with self._lock:
            self._ensure_file()

    def close(self) -> None:
        with self._lock:
            try:
                self._ensure_file()  # a log deleted after the last event is not lost either
            except (sqlite3.Error, OSError):
                pass
            self._db.close()

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, event: Any) -> Any:
        """Store `event` with the next seq; return the event as stored (seq assigned)."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Any]) -> list[Any]:
        """Store several events in one transaction (a step's sample groups): one commit, not N.
        Each event is encoded once: the row's body is its wire frame, which `frame` hands to the
        listeners of this batch (the server's fan-out) instead of encoding it again."""
        with self._lock:
            self._ensure_file()
            stored = [event.model_copy(update={"seq": self._next + i}) for i, event in enumerate(events)]
            frames = [encode_event(ev) for ev in stored]
            # the row as backend.protocol.eventlog.to_row builds it, from the frame already encoded
            rows = [(ev.seq, ev.ts, ev.kind, frame.decode().rstrip("\n")) for ev, frame in zip(stored, frames)]
            self._db.execute("BEGIN")
            try:
                self._db.executemany(INSERT, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next += len(stored)
            self._frames = {ev.seq: (ev, frame) for ev, frame in zip(stored, frames)}
            return stored

    def frame(self, event: Any) -> bytes:
        """The wire frame of `event`: the one stored for it when it is an event of the newest
        append (the bus hands those to its listeners right after appending), else encoded now."""
        hit = self._frames.get(getattr(event, "seq", None))
        if hit is not None and hit[0] is event:
            return hit[1]
        return encode_event(event)


_META_LOCK = threading.Lock()


def write_run_meta(run_dir: Path, **meta: Any) -> None:
    """Update `run.json` atomically. The server thread (pausing) and the training thread
    (paused, running) both write it: the read-modify-write holds a lock, and the temporary
    file is this writer's own, so a reader never sees a half-written or doubled file."""
    path = run_dir / "run.json"
    with _META_LOCK:
        current = read_run_meta(run_dir)
        current.update(meta)
        tmp = path.with_name(f".run.json.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(path)


def read_run_meta(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
