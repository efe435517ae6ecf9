"""Durable per-run event log (SQLite, WAL): append with contiguous seq, read from a seq.

The on-disk format and the reader are `backend.protocol.eventlog` (shared with the console).

One writer (the backend process); any number of readers (attach, replay, `ls`). Every
event is stored in the protocol's own JSON encoding, so replay decodes what the live
socket would have sent.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from backend.protocol.eventlog import INSERT, EventLogReader, init_writer, to_row


class RunStore(EventLogReader):
    """The writer of a run's event log; reads through the same queries as every reader.

    `RunStore(path, readonly=True)` is a plain `EventLogReader` (it never creates the file).
    The format (table, columns, version, row <-> event) is `backend.protocol.eventlog`'s.
    """

    def __new__(cls, path: str | Path, *, readonly: bool = False) -> Any:
        if readonly:
            return EventLogReader(path)
        return super().__new__(cls)

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.skipped = 0
        self.last_skipped = ""
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            init_writer(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        self._ready = True
        self._next = self.last_seq() + 1

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, event: Any) -> Any:
        """Store `event` with the next seq; return the event as stored (seq assigned)."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Any]) -> list[Any]:
        """Store several events in one transaction (a step's sample groups): one commit, not N."""
        with self._lock:
            stored = [event.model_copy(update={"seq": self._next + i}) for i, event in enumerate(events)]
            rows = [to_row(ev) for ev in stored]
            self._db.execute("BEGIN")
            try:
                self._db.executemany(INSERT, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next += len(stored)
            return stored


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
