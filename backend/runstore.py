"""Durable per-run event log (SQLite, WAL): append with contiguous seq, read from a seq.

One writer (the backend process); any number of readers (attach, replay, `ls`). Every
event is stored in the protocol's own JSON encoding, so replay decodes what the live
socket would have sent.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.protocol import decode_event, encode_event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY,
    ts   REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);
"""


class RunStore:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), -1) FROM events").fetchone()
        self._next = row[0] + 1

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, event: Any) -> Any:
        """Store `event` with the next seq; return the event as stored (seq assigned)."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Any]) -> list[Any]:
        """Store several events in one transaction (a step's sample groups): one commit, not N."""
        with self._lock:
            stored, rows = [], []
            for event in events:
                ev = event.model_copy(update={"seq": self._next + len(stored)})
                stored.append(ev)
                rows.append((ev.seq, ev.ts, ev.kind, encode_event(ev).decode().rstrip("\n")))
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO events(seq, ts, kind, body) VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next += len(stored)
            return stored

    def read(self, from_seq: int = 0, to_seq: int | None = None, kinds: tuple[str, ...] = ()) -> Iterator[Any]:
        """Decoded events with from_seq <= seq (< to_seq), in order."""
        sql = "SELECT body FROM events WHERE seq >= ?"
        args: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq < ?"
            args.append(to_seq)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        sql += " ORDER BY seq"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for (body,) in rows:
            yield decode_event(body)

    def read_raw(self, from_seq: int, to_seq: int) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE seq >= ? AND seq < ? ORDER BY seq", (from_seq, to_seq)
            ).fetchall()
        return [body.encode() + b"\n" for (body,) in rows]

    def last(self, kind: str) -> Any | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM events WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
            ).fetchone()
        return decode_event(row[0]) if row else None

    def seqs(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT seq FROM events ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
