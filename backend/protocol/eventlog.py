"""The run's event log on disk (`events.db`): its format, and the one read-only reader.

This is the contract between the backend, which writes the log (`backend/runstore.py`), and
every reader (`ls`, `status`, `replay`, `compare`, the server's replay to late joiners). It is
defined here once; nobody else writes SQL against it.

Format (version `FORMAT_VERSION`, kept in SQLite's `PRAGMA user_version`; a log written
before the version was recorded reads 0 and has the same layout):

* one table `events(seq INTEGER PRIMARY KEY, ts REAL, kind TEXT, body TEXT)` and an index on
  `(kind, seq)`; the database is in WAL mode (one writer, any number of readers);
* `seq` is the event's position: 0, 1, 2, ... contiguous, never reused;
* `body` is the event exactly as the wire encodes it (`encode_event`, one JSON object with
  `"v"`, without the newline); `decode_event(body)` gives the `Event` back;
* `ts` and `kind` repeat the body's fields, for queries.

A reader opens the file read-only (`mode=ro`): it never creates a missing log, never writes
`events.db`, and never blocks the writer (WAL readers take no lock the writer waits on).
SQLite itself may create the `-wal`/`-shm` side files next to a log whose writer has closed;
they hold no data and the next writer uses them.

Imports only the standard library and the protocol (which imports only pydantic).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from backend.protocol.codec import ProtocolError, decode_event, encode_event

FORMAT_VERSION = 1
TABLE = "events"
COLUMNS = ("seq", "ts", "kind", "body")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq  INTEGER PRIMARY KEY,
    ts   REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_kind ON {TABLE}(kind, seq);
"""

INSERT = f"INSERT INTO {TABLE}(seq, ts, kind, body) VALUES (?, ?, ?, ?)"


class EventLogError(Exception):
    """A log that cannot be read; the message names the file and says why."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class EventLogMissing(EventLogError, FileNotFoundError):
    """No file at the path (a run that has not written its first event yet, or a wrong path)."""


class EventLogCorrupt(EventLogError):
    """Not an SQLite database, not an rl-console event log, or damaged."""


class EventLogTooNew(EventLogError):
    """Written by a newer rl-console in a format this one does not know."""


def to_row(event: Any) -> tuple[int, float, str, str]:
    """The row an event is stored as (its `seq` must be assigned)."""
    return (event.seq, event.ts, event.kind, encode_event(event).decode().rstrip("\n"))


def from_row(body: str | bytes) -> Any:
    """The event a row's `body` holds (raises `ProtocolError` for one this side cannot decode)."""
    return decode_event(body)


def check_version(db: sqlite3.Connection, path: Path | str) -> int:
    """The log's format version; `EventLogTooNew` if this side cannot read it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > FORMAT_VERSION:
        raise EventLogTooNew(
            f"{path}: event log format {version} was written by a newer rl-console; this one reads "
            f"format {FORMAT_VERSION} and older (upgrade rl-console to read it)", path)
    return version or FORMAT_VERSION


def init_writer(db: sqlite3.Connection, path: Path | str) -> None:
    """Prepare a connection the backend will append through: WAL, the table, the version.
    A log in a newer format is refused before anything is written to it."""
    try:
        check_version(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        fresh = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        db.executescript(SCHEMA)
        if fresh:
            db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        _check_table(db, path)
    except sqlite3.DatabaseError as exc:
        raise EventLogCorrupt(f"{path}: cannot be used as an event log ({exc})", path) from None


def _check_table(db: sqlite3.Connection, path: Path | str) -> bool:
    """True when the events table is there with its columns; False for an empty database
    (a log whose writer is creating it); `EventLogCorrupt` for anything else."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if not tables:
        return False
    if TABLE not in tables:
        raise EventLogCorrupt(f"{path}: an SQLite database but not an rl-console event log "
                              f"(no '{TABLE}' table; it has {', '.join(sorted(tables))})", path)
    columns = tuple(r[1] for r in db.execute(f"PRAGMA table_info({TABLE})"))
    if columns != COLUMNS:
        raise EventLogCorrupt(f"{path}: its '{TABLE}' table has columns {columns}, not {COLUMNS}", path)
    return True


class EventLogReader:
    """Read-only access to one run's event log. Thread-safe (one connection, one lock).

    Events that this side cannot decode (a kind or field added by a newer backend in the same
    format) are skipped when reading decoded events, as the live client skips such frames, and
    counted in `skipped`; raw reads return them as stored.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.skipped = 0
        self.last_skipped = ""
        self._lock = threading.Lock()
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise EventLogMissing(f"no event log: {self.path} {what}", self.path)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect("mode=ro")
        except sqlite3.OperationalError as exc:
            # A WAL log needs its `-shm` side file; on a read-only mount (or a directory this
            # user cannot write) SQLite cannot create it and cannot open the log. When no writer
            # left changes in `-wal` (a closed run: the writer merged them), the file alone is
            # the whole log and can be read as immutable.
            if not _cannot_create_side_files(self.path, exc):
                raise EventLogError(f"{self.path}: cannot open the event log ({exc})", self.path) from None
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise EventLogError(
                    f"{self.path}: cannot be read here: its directory is read-only and {wal.name} holds changes "
                    "not merged into the log yet (its backend did not close it); copy the run directory to a "
                    "writable place and read it there", self.path) from None
            try:
                return self._connect("mode=ro&immutable=1")
            except sqlite3.OperationalError as exc2:
                raise EventLogError(f"{self.path}: cannot open the event log ({exc2})", self.path) from None

    def _connect(self, mode: str) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?{mode}"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
        try:
            check_version(db, self.path)
            self._ready = _check_table(db, self.path)
        except sqlite3.OperationalError as exc:
            db.close()
            if "unable to open" in str(exc):
                raise
            raise EventLogCorrupt(f"{self.path}: not a readable event log ({exc})", self.path) from None
        except sqlite3.DatabaseError as exc:
            db.close()
            raise EventLogCorrupt(f"{self.path}: not a readable event log ({exc})", self.path) from None
        except EventLogError:
            db.close()
            raise
        return db

    def __enter__(self) -> EventLogReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- queries (the only SQL against the log besides the writer's INSERT) -------------
    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock:
            if not self._ready:  # created after we opened an empty file: look again
                try:
                    self._ready = _check_table(self._db, self.path)
                except sqlite3.DatabaseError as exc:
                    raise EventLogCorrupt(f"{self.path}: not a readable event log ({exc})", self.path) from None
                if not self._ready:
                    return []
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise EventLogCorrupt(f"{self.path}: reading the event log failed ({exc})", self.path) from None

    def _decode(self, rows: list[tuple]) -> Iterator[Any]:
        for seq, body in rows:
            try:
                yield from_row(body)
            except ProtocolError as exc:
                self.skipped += 1
                self.last_skipped = f"seq {seq}: {exc}"

    def last_seq(self) -> int:
        """The newest event's seq (-1: none yet)."""
        rows = self._rows(f"SELECT COALESCE(MAX(seq), -1) FROM {TABLE}")
        return rows[0][0] if rows else -1

    @property
    def next_seq(self) -> int:
        """The seq the next appended event will get."""
        return self.last_seq() + 1

    def newest_ts(self) -> float | None:
        rows = self._rows(f"SELECT MAX(ts) FROM {TABLE}")
        return rows[0][0] if rows else None

    def ran_s(self) -> float | None:
        """Seconds the run's backends ran: from the first event to the newest, less the gaps
        between a backend's last event and the next one's `run_resumed` (a run resumed a day
        later did not run that day). Reads by seq (the primary key), not by scanning for ts."""
        first = self._rows(f"SELECT ts FROM {TABLE} ORDER BY seq LIMIT 1")
        if not first:
            return None
        start = first[0][0]
        total = 0.0
        for seq, ts in self._rows(f"SELECT seq, ts FROM {TABLE} WHERE kind = 'run_resumed' ORDER BY seq"):
            prev = self._rows(f"SELECT ts FROM {TABLE} WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,))
            total += max(0.0, (prev[0][0] if prev else start) - start)
            start = ts
        newest = self.newest_ts() or start
        return total + max(0.0, newest - start)

    def read(self, from_seq: int = 0, to_seq: int | None = None, kinds: tuple[str, ...] = (),
             limit: int | None = None) -> Iterator[Any]:
        """Decoded events with from_seq <= seq (< to_seq), of `kinds` if given, in seq order."""
        sql = f"SELECT seq, body FROM {TABLE} WHERE seq >= ?"
        args: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq < ?"
            args.append(to_seq)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._decode(self._rows(sql, args))

    def read_raw(self, from_seq: int, to_seq: int) -> list[bytes]:
        """Stored frames (wire encoding, newline-terminated) with from_seq <= seq < to_seq."""
        rows = self._rows(f"SELECT body FROM {TABLE} WHERE seq >= ? AND seq < ? ORDER BY seq", (from_seq, to_seq))
        return [body.encode() + b"\n" for (body,) in rows]

    def read_page(self, from_seq: int, to_seq: int | None = None, max_bytes: int = 256 * 1024) -> tuple[bytes, int]:
        """Stored frames from `from_seq` on (below `to_seq`), joined (wire encoding, one per line),
        at most about `max_bytes` (a page always holds one frame if there is one). Returns the
        page and the seq that follows it; a page bounded in bytes keeps a replay's memory flat."""
        sql = f"SELECT seq, CAST(body AS BLOB) FROM {TABLE} WHERE seq >= ?"
        args: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq < ?"
            args.append(to_seq)
        sql += " ORDER BY seq LIMIT 4096"
        parts: list[bytes] = []
        size, nxt = 0, from_seq
        with self._lock:
            if not self._ready:
                self._ready = _check_table(self._db, self.path)
                if not self._ready:
                    return b"", from_seq
            try:
                cur = self._db.execute(sql, args)
                try:
                    for seq, body in cur:
                        parts.append(body)
                        size += len(body) + 1
                        nxt = seq + 1
                        if size >= max_bytes:
                            break
                finally:
                    cur.close()
            except sqlite3.DatabaseError as exc:
                raise EventLogCorrupt(f"{self.path}: reading the event log failed ({exc})", self.path) from None
        if not parts:
            return b"", from_seq
        parts.append(b"")
        return b"\n".join(parts), nxt

    def latest(self, kind: str, n: int = 1, before_seq: int | None = None) -> list[Any]:
        """The newest `n` decodable events of `kind` (with seq < `before_seq` if given), newest first."""
        if before_seq is None:
            rows = self._rows(f"SELECT seq, body FROM {TABLE} WHERE kind = ? ORDER BY seq DESC LIMIT ?", (kind, n))
        else:
            rows = self._rows(f"SELECT seq, body FROM {TABLE} WHERE kind = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                              (kind, before_seq, n))
        return list(self._decode(rows))

    def last(self, kind: str) -> Any | None:
        """The newest event of `kind`, or None."""
        found = self.latest(kind, 1)
        return found[0] if found else None

    def seqs(self) -> list[int]:
        return [r[0] for r in self._rows(f"SELECT seq FROM {TABLE} ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _cannot_create_side_files(path: Path, exc: sqlite3.OperationalError) -> bool:
    """SQLite said "unable to open" because the log's directory takes no new file (a read-only
    mount, or no write permission), not because the log itself is unreadable."""
    if "unable to open" not in str(exc) or not os.access(path, os.R_OK):
        return False
    return not _writable_dir(path.parent)


def _writable_dir(directory: Path) -> bool:
    """Whether a file can be created in `directory` (tried, not guessed from the modes: root
    ignores them, a read-only mount does not)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".rlc-probe-"):
            return True
    except OSError:
        return False


def open_reader(path: str | Path) -> EventLogReader:
    return EventLogReader(path)
