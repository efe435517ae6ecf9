"""The control socket: fan-out of events to every client, routing of commands to the controller.

A Unix domain socket in the run's directory (directory 0700, socket 0600). On connect the
server sends `Hello`; the client answers `Subscribe(from_seq)`; the server then streams
every logged event from that seq on, in order, with no gap and no duplicate. Every later
frame is a command; a malformed, oversized or unknown frame gets an `error` reply and the run
is untouched.

Fan-out, and why it costs the run little whatever the number of clients: the bus listener
(on the training thread) only encodes each event once and appends the frame to one shared
in-memory tail of the newest frames (`_Feed`, bounded in bytes), then wakes the event loop
(once per batch, not per event). Each client has a cursor (the next seq it needs) and one
writer task: it takes frames from the shared tail when its cursor is there, and otherwise
pages from the log through a separate read-only connection (pages bounded in bytes, a few
readers at a time), writing each page and waiting for the socket to take it (`drain`):
a slow client only slows itself, holds at most a page and the transport's buffer, and is
never dropped; the run's writer never waits on a reader.

Who may connect and who may steer: the kernel's peer credentials (SO_PEERCRED) must name
the run's owner (or root) even if the socket's file modes were loosened. One connection
controls the run at a time; the others are viewers whose commands are rejected (and
logged) with the controller's name. A viewer that asked for control is promoted, first
come first served, when the controller leaves; `Subscribe(take=True)` takes it over (also sent
again on a subscribed connection: a waiting console takes control without re-attaching).

A TCP listener exists only when asked for (`run --listen HOST:PORT`), and a TCP connection
must open with `Subscribe(token=...)` carrying the run's token (`<run dir>/token`, 0600):
anything else is answered with an error and the connection is closed, before any of its
frames can reach the run (not even as an audited rejection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from backend.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_command,
    encode_event,
)
from backend.protocol.commands import Subscribe
from backend.protocol.events import CommandResult, ControlStatus, ErrorReply, Hello, LogLine

FEED_BYTES = 8 << 20  # newest frames kept in memory for clients that keep up; older ones are paged from the log
PAGE_BYTES = 128 << 10  # one write to a client (a page of history, or of the tail)
HISTORY_READERS = 4  # pages read from the log at once
PAGE_CACHE = 64  # history pages kept for the next client that needs the same one (8 MB at most)
BACKLOG = 1024  # connections waiting to be accepted (asyncio's default, 100, refused a crowd attaching at once)
FANOUT_INTERVAL = 0.05  # s: new frames reach the clients at most this often (one write per client per wake)
MAX_BAD_FRAMES = 100
AUDIT_LIMIT = 20  # rejected commands per connection written to the run's log; the rest are summed up


class _Client:
    def __init__(self, writer: asyncio.StreamWriter, *, tcp: bool = False) -> None:
        self.writer = writer
        self.direct: list[bytes] = []  # frames for this client only (control status), written next
        self.cursor = 0  # the next seq this client needs
        self.idle = False  # its writer task waits for new frames (the wake may write for it)
        self.wake = asyncio.Event()
        self.live = False
        self.closing = False  # its connection ends: write what is there, then stop
        self.tcp = tcp
        self.rejected = 0  # rejected commands written to the run's log
        self.unlogged = 0  # ... and answered but not logged (past AUDIT_LIMIT)
        if tcp:
            self.pid, self.uid = -1, -1
            host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
            self.desc = f"tcp {host}:{port}"
        else:
            self.pid, self.uid = _peer(writer)
            self.desc = f"pid {self.pid} (uid {self.uid})"
        self.role = ""  # "" (not subscribed) | "control" | "view"


class _Feed:
    """The newest logged frames, one copy shared by every client. Appended by the bus listener
    (any thread, in seq order), read by the clients' writer tasks (the event loop)."""

    def __init__(self, next_seq: int) -> None:
        self.lock = threading.Lock()
        self.base = next_seq  # seq of frames[0]
        self.frames: list[bytes] = []
        self.bytes = 0

    @property
    def next_seq(self) -> int:
        return self.base + len(self.frames)

    def append(self, seq: int, frame: bytes) -> None:
        """Under `lock`."""
        if seq != self.base + len(self.frames):  # not contiguous (never expected): the tail restarts here
            self.frames.clear()
            self.bytes, self.base = 0, seq
        self.frames.append(frame)
        self.bytes += len(frame)
        if self.bytes > FEED_BYTES and len(self.frames) > 1:  # drop the older half: it is in the log
            k = len(self.frames) // 2
            self.bytes -= sum(len(f) for f in self.frames[:k])
            del self.frames[:k]
            self.base += k

    def take(self, cursor: int, max_bytes: int) -> tuple[bytes | None, int]:
        """(frames from `cursor` on, joined, about `max_bytes` at most; the seq after them), or
        (None, cursor) when `cursor` is older than the tail (read it from the log)."""
        with self.lock:
            if cursor < self.base:
                return None, cursor
            i = cursor - self.base
            frames = self.frames
            j, size = i, 0
            while j < len(frames) and size < max_bytes:
                size += len(frames[j])
                j += 1
            return b"".join(frames[i:j]), self.base + max(j, i)


def _malloc_trim() -> None:
    """glibc: return free heap memory to the OS (a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """(pid, uid) of the connecting process, from the kernel (-1 where the OS has no SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return -1, -1
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


class ControlServer:
    """Serves one run. `controller` is what the server needs of the run, and nothing more:
    `bus` (backend.bus.EventBus), `run_id`, `step`, `submit(cmd)` and `reject(id, kind, why)`."""

    def __init__(self, controller, socket_path: Path, *, listen: tuple[str, int] | None = None, token: str = "") -> None:
        if listen is not None and len(token) < 16:
            raise ValueError("a TCP listener needs a token of at least 16 characters")
        self.c = controller
        self.path = Path(socket_path)
        self.listen = listen
        self.token = token
        self.tcp_address: tuple[str, int] | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: set[_Client] = set()
        self._server: asyncio.base_events.Server | None = None
        self.owner_uid = os.getuid()
        self.holder: _Client | None = None  # the one connection whose commands are applied
        self.waiting: list[_Client] = []  # viewers that asked for control, first come first served
        self.feed = _Feed(0)
        self._wake_pending = False
        self._last_wake = 0.0
        self._paging = 0  # clients reading history pages right now
        self._trim: asyncio.TimerHandle | None = None
        self._readers: list[Any] = []  # read-only log connections for history pages
        self._pages: OrderedDict[int, tuple[bytes, int]] = OrderedDict()  # start seq -> (page, next seq)
        self._page_reads: dict[int, asyncio.Future] = {}  # pages being read now, by start seq
        self._reading: asyncio.Semaphore | None = None
        self._frame = encode_event  # event -> its wire frame (start() takes the log's, encoded once)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._reading = asyncio.Semaphore(HISTORY_READERS)
        self.feed = _Feed(self.c.bus.store.next_seq)  # what is older is read from the log
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_FRAME_BYTES + 1024,
                                                          backlog=BACKLOG)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        if self.listen is not None:
            host, port = self.listen
            self._tcp_server = await asyncio.start_server(
                lambda r, w: self._handle(r, w, tcp=True), host, port, limit=MAX_FRAME_BYTES + 1024, backlog=BACKLOG
            )
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
        frame = getattr(getattr(self.c.bus, "store", None), "frame", None)
        self._frame = frame if callable(frame) else encode_event  # RunStore.frame: the frame it stored
        self.c.bus.subscribe(self._on_event)

    async def stop(self) -> None:
        self.c.bus.unsubscribe(self._on_event)
        for client in list(self.clients):
            client.closing = True
        self._wake()
        await asyncio.sleep(0.2)  # let writers flush the last events
        for server in (self._server, self._tcp_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                reader.close()
        self._readers.clear()

    # called from any thread, under the bus lock: take the frame the log stored (encoded once for
    # the log and the clients), append it, wake the loop once per batch, and only when a client
    # is there to write to: a client that connects later takes the frames from the tail before
    # it first waits (it is in `clients` before its writer looks), so no wake is lost
    def _on_event(self, event: Any) -> None:
        frame = self._frame(event)
        feed = self.feed
        with feed.lock:
            feed.append(event.seq, frame)
            if self._wake_pending or not self.clients:
                return
            self._wake_pending = True
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake_soon)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _wake_soon(self) -> None:
        """Event loop: wake the writers now, or FANOUT_INTERVAL after the last wake (so a burst
        of events costs each client one write, not one per event)."""
        wait = self._last_wake + FANOUT_INTERVAL - self.loop.time()
        if wait <= 0:
            self._wake()
        else:
            self.loop.call_later(wait, self._wake)

    def _wake(self) -> None:
        """Event loop: every writer task looks for new frames."""
        with self.feed.lock:
            self._wake_pending = False
        self._last_wake = self.loop.time() if self.loop is not None else 0.0
        # Clients that wait for new frames, at the same cursor, with little unsent: written here,
        # one shared bytes object per cursor, one send each, no task switch. Others: their writer
        # task runs (history, backpressure, their own frames).
        batches: dict[int, tuple[bytes | None, int]] = {}
        for client in list(self.clients):
            transport = client.writer.transport
            if (client.idle and not client.direct and not client.closing and transport is not None
                    and not transport.is_closing() and transport.get_write_buffer_size() < PAGE_BYTES):
                if client.cursor not in batches:
                    batches[client.cursor] = self.feed.take(client.cursor, FEED_BYTES)
                page, nxt = batches[client.cursor]
                if page is not None:
                    if page:
                        transport.write(page)
                        client.cursor = nxt
                    continue
            client.wake.set()

    async def _send(self, writer: asyncio.StreamWriter, event: Any) -> None:
        writer.write(encode_event(event))
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tcp: bool = False) -> None:
        client = _Client(writer, tcp=tcp)
        pump: asyncio.Task | None = None
        try:
            if client.uid not in (-1, 0, self.owner_uid):
                await self._send(writer, ErrorReply(message=f"refused: uid {client.uid} does not own this run (owner uid {self.owner_uid})"))
                return
            first: bytes | None = None
            if tcp:  # nothing about the run before the token
                await self._send(writer, Hello(protocol=PROTOCOL_VERSION))
                first = await self._authenticate(reader, writer)
                if first is None:
                    return
            else:
                await self._send(writer, Hello(protocol=PROTOCOL_VERSION, run_id=self.c.run_id, last_seq=self.c.bus.last_seq))
            bad = 0
            while True:
                try:
                    line, first = (first, None) if first is not None else (await reader.readline(), None)
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, ErrorReply(message=f"frame exceeds {MAX_FRAME_BYTES} bytes; closing"))
                    return
                except ConnectionError:
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    cmd = decode_command(line)
                except ProtocolError as exc:
                    if exc.command_id:  # a known command with bad values: an audited rejection, not abuse
                        await self._answer(client, pump, exc.command_id, exc.kind, str(exc))
                        continue
                    bad += 1
                    await self._send(writer, ErrorReply(message=str(exc)))
                    if bad >= MAX_BAD_FRAMES:
                        await self._send(writer, ErrorReply(message="too many bad frames; closing"))
                        return
                    continue
                if isinstance(cmd, Subscribe):
                    if pump is not None:
                        if cmd.take and client.role == "control":  # a waiting console takes control, same stream
                            self._join(client, cmd)
                        elif cmd.take:
                            self._tell(client, "attached --read-only: attach again without --read-only to take control")
                        else:
                            await self._send(writer, ErrorReply(message="already subscribed"))
                        continue
                    if client.tcp:  # authenticated now: the real hello
                        await self._send(writer, Hello(protocol=PROTOCOL_VERSION, run_id=self.c.run_id, last_seq=self.c.bus.last_seq))
                    start = self._register(client, cmd.from_seq)  # before the next frame: no answer can be missed
                    pump = asyncio.create_task(self._pump(client, start))
                    self._join(client, cmd)
                    continue
                why = self._read_only_reason(client)
                if why:
                    await self._answer(client, pump, cmd.id, cmd.kind, why)
                    continue
                result = self.c.submit(cmd)
                if pump is None:  # not subscribed: the event stream does not reach it, answer here
                    await self._send(writer, result)
        finally:
            if client.unlogged:
                with contextlib.suppress(Exception):
                    self.c.emit(LogLine(level="warning", message=f"{client.unlogged} further rejected commands from "
                                        f"{client.desc} were answered but not logged (more than {AUDIT_LIMIT})"))
            self.clients.discard(client)
            self._leave(client)
            if pump is not None:
                # deliver what is already logged for this client (answers to its last commands)
                client.closing = True
                self._wake()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(pump, 2.0)
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if not self.clients and self.loop is not None:
                self._trim_later()  # the last client left: its buffers' memory goes back

    async def _answer(self, client: _Client, pump: asyncio.Task | None, command_id: str, kind: str, reason: str) -> None:
        """Reject a command: audited in the run's log (the first AUDIT_LIMIT per connection; a
        flood of bad commands is answered but summed up in one log line when it leaves), and
        answered on this connection whether or not it subscribed."""
        if client.rejected < AUDIT_LIMIT:
            client.rejected += 1
            result = self.c.reject(command_id, kind, reason)
            if pump is not None:
                await asyncio.sleep(0)  # let the pump deliver the answer
                return
        else:
            client.unlogged += 1
            result = CommandResult(command_id=command_id, command=kind, status="rejected", reason=reason, step=self.c.step)
        await self._send(client.writer, result)

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """TCP: the first frame must be a subscribe with the run's token. Returns that frame (it is
        then handled as usual), or None after refusing."""
        line = b""
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            cmd = decode_command(line)
        except (ValueError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError, ProtocolError):
            cmd = None
        if not isinstance(cmd, Subscribe) or not hmac.compare_digest(cmd.token.encode(), self.token.encode()):
            await asyncio.sleep(0.5)  # no fast guessing
            if not isinstance(cmd, Subscribe):
                why = "a TCP connection must open with a subscribe frame carrying the run's token"
            elif not cmd.token:
                why = "no token: a TCP connection needs the run's token (the file `token` in its run directory)"
            else:
                why = "wrong token: it is not this run's (the file `token` in its run directory)"
            with contextlib.suppress(ConnectionError):
                await self._send(writer, ErrorReply(message=f"refused: {why}"))
            return None
        return line

    # ---- one controller at a time ---------------------------------------------------
    def _join(self, client: _Client, sub: Subscribe) -> None:
        client.role = sub.role
        if sub.client:
            client.desc = f"{sub.client} (pid {client.pid}, uid {client.uid})"
        if sub.role == "view":
            self._tell(client)
            return
        if client is self.holder:
            self._tell(client)
            return
        if client in self.waiting:  # a waiting console that takes control now
            self.waiting.remove(client)
        if self.holder is None or sub.take:
            previous, self.holder = self.holder, client
            if previous is not None:
                self.waiting.insert(0, previous)  # it gets control back when the taker leaves
            self._tell_all(f"control taken by {client.desc}" if previous else "")
        else:
            self.waiting.append(client)
            self._tell(client, "another client controls this run; you get control when it leaves")

    def _leave(self, client: _Client) -> None:
        if client in self.waiting:
            self.waiting.remove(client)
        if self.holder is client:
            self.holder = self.waiting.pop(0) if self.waiting else None
            self._tell_all(f"{client.desc} released control")

    def _read_only_reason(self, client: _Client) -> str:
        if client is self.holder:
            return ""
        if client.role == "view":
            return "read-only: this connection attached as a viewer (--read-only)"
        if self.holder is None:  # a bare connection (no subscribe) while nobody controls the run
            return ""
        return (f"read-only: {self.holder.desc} controls this run; detach it, or take control "
                "(`rl-console ctl --take ...`)")

    def _tell(self, client: _Client, reason: str = "") -> None:
        if not client.live:
            return
        holder = self.holder.desc if self.holder is not None else ""
        status = ControlStatus(role="controller" if client is self.holder else "viewer", holder=holder, reason=reason)
        client.direct.append(encode_event(status))
        self._wake()

    def _tell_all(self, reason: str = "") -> None:
        for client in list(self.clients):
            if client.role:
                self._tell(client, reason)

    def _register(self, client: _Client, from_seq: int) -> int:
        """The client's first seq: `from_seq`, or (negative) the next event to be logged."""
        client.live = True
        self.clients.add(client)
        if from_seq >= 0:
            return from_seq
        with self.feed.lock:
            return self.feed.next_seq

    async def _history(self, start: int) -> tuple[bytes, int]:
        """A page of logged frames from `start` on, read on a worker thread through one of a few
        read-only connections (the run's writer never waits on them). A page that ends before
        the in-memory tail is the same for every client that asks for it (the log only grows):
        it is read once and kept for the next clients (`PAGE_CACHE` pages), so a crowd
        replaying from seq 0 costs about one replay's reads."""
        self._paging += 1
        try:
            if (hit := self._pages.get(start)) is not None:
                self._pages.move_to_end(start)
                return hit
            if (pending := self._page_reads.get(start)) is not None:  # another client is reading it
                page, nxt = await asyncio.shield(pending)
                if page:
                    return page, nxt
                # its read failed (or it left): read it here
            future = self.loop.create_future()
            self._page_reads[start] = future
            result = (b"", start)  # what the waiters get if this read fails: they read it themselves
            try:
                result = await self._read_page(start)
            finally:
                del self._page_reads[start]
                future.set_result(result)
            page, nxt = result
            if page and nxt < self.feed.base:
                self._pages[start] = (page, nxt)
                while len(self._pages) > PAGE_CACHE:
                    self._pages.popitem(last=False)
            return page, nxt
        finally:
            self._paging -= 1
            if self._paging == 0:
                self._trim_later()

    def _trim_later(self) -> None:
        """When no client has paged history for a second, give freed heap memory back to the OS
        (glibc keeps freed pages of the readers' threads otherwise: RSS stays up after a crowd of
        replays has left)."""
        if self._trim is not None:
            self._trim.cancel()

        def trim() -> None:
            if self._paging == 0:
                self._pages.clear()  # the crowd has passed: its pages go too
            asyncio.ensure_future(asyncio.to_thread(_malloc_trim))

        self._trim = self.loop.call_later(1.0, trim)

    async def _read_page(self, start: int) -> tuple[bytes, int]:
        from backend.protocol.eventlog import EventLogReader

        async with self._reading:
            for _attempt in range(2):
                reader = self._readers.pop() if self._readers else None
                if reader is None:
                    reader = await asyncio.to_thread(EventLogReader, self.c.bus.store.path)
                try:
                    page, nxt = await asyncio.to_thread(reader.read_page, start, None, PAGE_BYTES)
                except Exception:
                    page, nxt = b"", start
                if page:
                    self._readers.append(reader)
                    return page, nxt
                # nothing where the log must have it: this connection may hold a file that was
                # deleted and recreated (runstore.py); a fresh one reads the file at the path
                with contextlib.suppress(Exception):
                    reader.close()
            return b"", start

    async def _pump(self, client: _Client, cursor: int) -> None:
        """The client's writer: from its cursor on, a page at a time, each page waiting for the
        socket to take it; frames from the shared tail, older ones from the log. While it waits
        for new frames, `_wake` may write them for it (and move its cursor)."""
        writer = client.writer
        feed = self.feed
        client.cursor = cursor
        while True:
            cursor = client.cursor
            if client.direct:
                frames, client.direct = client.direct, []
                writer.write(b"".join(frames))
            page, nxt = feed.take(cursor, PAGE_BYTES)
            if page is None:  # older than the tail: page it from the log
                page, nxt = await self._history(cursor)
                if not page:
                    writer.write(encode_event(ErrorReply(message=f"events from seq {cursor} cannot be read from the "
                                                                 "run's log; closing (attach again)")))
                    await writer.drain()
                    return
            if page:
                writer.write(page)
                client.cursor = nxt
                await writer.drain()  # backpressure: a slow client waits here, alone
                await asyncio.sleep(0)  # and a fast one lets the others write
                continue
            if client.closing:
                await writer.drain()
                return
            client.wake.clear()
            if feed.next_seq > cursor or client.direct or client.closing:
                continue
            client.idle = True
            try:
                await client.wake.wait()
            finally:
                client.idle = False
