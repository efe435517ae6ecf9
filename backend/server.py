"""The control socket: fan-out of events to every client, routing of commands to the controller.

A Unix domain socket in the run's directory (directory 0700, socket 0600). On connect the
server sends `Hello`; the client answers `Subscribe(from_seq)`; the server replays the run's
log from that seq and then streams live events with no gap and no duplicate (the cut is
taken under the controller's emit lock). Every later frame is a command; a malformed,
oversized or unknown frame gets an `error` reply and the run is untouched.

Who may connect and who may steer: the kernel's peer credentials (SO_PEERCRED) must name
the run's owner (or root) even if the socket's file modes were loosened. One connection
controls the run at a time; the others are viewers whose commands are rejected (and
logged) with the controller's name. A viewer that asked for control is promoted, first
come first served, when the controller leaves; `Subscribe(take=True)` takes it over.

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

CLIENT_QUEUE = 20_000  # frames buffered per client before a slow client is dropped (it can re-attach)
MAX_BAD_FRAMES = 100
AUDIT_LIMIT = 20  # rejected commands per connection written to the run's log; the rest are summed up


class _Client:
    def __init__(self, writer: asyncio.StreamWriter, *, tcp: bool = False) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.live = False
        self.min_seq = 0
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

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_FRAME_BYTES + 1024)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        if self.listen is not None:
            host, port = self.listen
            self._tcp_server = await asyncio.start_server(
                lambda r, w: self._handle(r, w, tcp=True), host, port, limit=MAX_FRAME_BYTES + 1024
            )
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
        self.c.bus.subscribe(self._on_event)

    async def stop(self) -> None:
        self.c.bus.unsubscribe(self._on_event)
        for client in list(self.clients):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)
        await asyncio.sleep(0.2)  # let writers flush the last events
        for server in (self._server, self._tcp_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # called from any thread, under the controller's emit lock
    def _on_event(self, event: Any) -> None:
        frame = encode_event(event)
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, frame, event.seq)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _fanout(self, frame: bytes, seq: int) -> None:
        for client in list(self.clients):
            if not client.live or seq < client.min_seq:
                continue
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.clients.discard(client)
                client.writer.close()

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
                        await self._send(writer, ErrorReply(message="already subscribed"))
                        continue
                    if client.tcp:  # authenticated now: the real hello
                        await self._send(writer, Hello(protocol=PROTOCOL_VERSION, run_id=self.c.run_id, last_seq=self.c.bus.last_seq))
                    cut = self._register(client)  # before the next frame: no answer can be missed
                    pump = asyncio.create_task(self._pump(client, cmd.from_seq, cut))
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
                # deliver what is already queued for this client (answers to its last commands)
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(None)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(pump, 2.0)
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

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
            with contextlib.suppress(ConnectionError):
                await self._send(writer, ErrorReply(message="refused: a TCP connection must open with subscribe and the run's token"))
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
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(encode_event(status))

    def _tell_all(self, reason: str = "") -> None:
        for client in list(self.clients):
            if client.role:
                self._tell(client, reason)

    def _register(self, client: _Client) -> int:
        """Cut: everything < cut comes from the log, everything >= cut from the live queue."""
        with self.c.bus.cut() as cut:
            client.min_seq = cut
            client.live = True
            self.clients.add(client)
        return cut

    async def _pump(self, client: _Client, from_seq: int, cut: int) -> None:
        writer = client.writer
        if from_seq >= 0:
            start = from_seq
            while start < cut:
                end = min(cut, start + 2000)
                frames = await asyncio.to_thread(self.c.bus.read_raw, start, end)
                writer.writelines(frames)
                await writer.drain()
                start = end
        while True:
            frame = await client.queue.get()
            if frame is None:
                return
            writer.write(frame)
            if client.queue.empty():
                await writer.drain()
