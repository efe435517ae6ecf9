"""BackendClient: one connection to a run's control socket.

Connect, read the server's `Hello`, send `Subscribe(from_seq)`, then iterate events
(history from the run's log first, then live). Commands go back on the same socket and
are answered by `CommandResult` events carrying the command's id.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from backend.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_event,
    encode_command,
)
from backend.protocol.commands import Subscribe
from backend.protocol.events import CommandResult, ErrorReply, Hello


class ClientError(RuntimeError):
    pass


class BackendClient:
    @staticmethod
    def wall_clock() -> float:
        """A live feed: the console's run clock runs on between its events (`RLConsoleApp.wall_now`)."""
        return time.time()

    def __init__(
        self, socket_path: str | Path, *, from_seq: int = 0, role: str = "control", take: bool = False, client: str = "",
        token: str = "",
    ) -> None:
        """`socket_path`: the run's Unix socket, or "tcp://HOST:PORT" for a backend started with
        `--listen` (then `token` is required)."""
        self.tcp = parse_tcp(str(socket_path))
        self.socket_path = Path(socket_path) if self.tcp is None else socket_path
        self.token = token
        self.from_seq = from_seq
        self.role = role
        self.take = take
        self.client = client or describe_self()
        self.hello: Hello | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[CommandResult]] = {}
        self.skipped = 0  # frames this client could not decode (a newer backend's events), skipped
        self.last_skipped = ""

    async def connect(self, timeout: float = 5.0) -> Hello:
        try:
            if self.tcp is not None:
                opening = asyncio.open_connection(*self.tcp, limit=MAX_FRAME_BYTES + 1024)
            else:
                opening = asyncio.open_unix_connection(str(self.socket_path), limit=MAX_FRAME_BYTES + 1024)
            self._reader, self._writer = await asyncio.wait_for(opening, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ClientError(f"no run is listening on {self.socket_path} ({exc.strerror or exc})") from None
        except PermissionError:
            raise ClientError(f"permission denied on {self.socket_path}: the run belongs to another user") from None
        line = await asyncio.wait_for(self._reader.readline(), timeout)
        if not line:
            raise ClientError("the backend closed the connection before saying hello")
        hello = decode_event(line)
        if isinstance(hello, ErrorReply):
            raise ClientError(f"the backend refused the connection: {hello.message}")
        if not isinstance(hello, Hello):
            raise ClientError(f"expected hello, got {hello.kind}")
        if hello.protocol != PROTOCOL_VERSION:
            raise ClientError(f"backend speaks protocol {hello.protocol}, this console speaks {PROTOCOL_VERSION}")
        self.hello = hello
        await self.send(Subscribe(from_seq=self.from_seq, role=self.role, take=self.take, client=self.client, token=self.token))
        return hello

    async def send(self, command: Any) -> None:
        if self._writer is None:
            raise ClientError("not connected")
        self._writer.write(encode_command(command))
        await self._writer.drain()

    async def request(self, command: Any, timeout: float = 10.0) -> CommandResult:
        """Send a command and wait for its CommandResult (needs `events()` running, or use `call`)."""
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command.id] = fut
        await self.send(command)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(command.id, None)

    async def events(self) -> AsyncIterator[Any]:
        assert self._reader is not None, "connect() first"
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionResetError, asyncio.IncompleteReadError):
                return
            except ValueError as exc:  # line over the limit
                raise ClientError(f"frame too large from backend: {exc}") from None
            if not line:
                return
            try:
                event = decode_event(line)
            except ProtocolError as exc:  # a newer backend's event kind or field: skip it, keep the stream
                self.skipped += 1
                self.last_skipped = str(exc)
                continue
            if isinstance(event, CommandResult) and event.command_id in self._pending:
                fut = self._pending[event.command_id]
                if not fut.done():
                    fut.set_result(event)
            yield event

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, BrokenPipeError):
                pass
            self._writer = None


def parse_tcp(target: str) -> tuple[str, int] | None:
    """("host", port) for "tcp://host:port", None for a socket path."""
    if not target.startswith("tcp://"):
        return None
    host, sep, port = target[len("tcp://"):].rpartition(":")
    if not sep or not port.isdigit():
        raise ClientError(f"{target!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


def describe_self() -> str:
    """How the other consoles of a run see this one: program, user and terminal."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "client"
    if prog in ("cli.py", "__main__.py", "-c", ""):
        prog = "rl-console"
    try:
        tty = os.ttyname(0).removeprefix("/dev/")
    except OSError:
        tty = ""  # a script (e.g. `ctl` from cron): the server adds pid and uid
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or _user_name()
    return f"{prog} {user}@{tty}" if tty else f"{prog} {user}" if user else prog


def _user_name() -> str:
    """The login name of this process's uid ("" when the system has none for it; the server
    names the uid anyway)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return ""


async def call(socket_path: str | Path, command: Any, timeout: float = 10.0, *, take: bool = False, token: str = "") -> CommandResult:
    """One-shot: connect, send `command`, return the backend's first answer to it.

    Subscribes from the live end so no history is replayed. Asks for control (`take`: even
    from a console that holds it; that console gets it back when this call disconnects).
    """
    client = BackendClient(socket_path, from_seq=-1, take=take, client=f"{describe_self()} ctl", token=token)
    await client.connect(timeout)
    try:
        await client.send(command)

        async def _wait() -> CommandResult:
            async for ev in client.events():
                if isinstance(ev, CommandResult) and ev.command_id == command.id:
                    return ev
                if isinstance(ev, ErrorReply) and ev.message.startswith("refused"):
                    raise ClientError(ev.message)
            raise ClientError("the backend closed the connection before answering")

        return await asyncio.wait_for(_wait(), timeout)
    finally:
        await client.close()


async def call_until_done(socket_path: str | Path, command: Any, timeout: float = 120.0, *, take: bool = False,
                          token: str = "") -> tuple[CommandResult, list[Any]]:
    """Like `call`, but wait until the command is applied (or failed/rejected) and also return
    the events the backend sent in answer to it (those carrying its `command_id`, e.g. a
    `TryResult`). Commands apply at the next step boundary, so this can take a step."""
    client = BackendClient(socket_path, from_seq=-1, take=take, client=f"{describe_self()} ctl", token=token)
    await client.connect(min(timeout, 10.0))
    try:
        await client.send(command)
        answers: list[Any] = []

        async def _wait() -> CommandResult:
            async for ev in client.events():
                if isinstance(ev, CommandResult) and ev.command_id == command.id:
                    if ev.status != "accepted":
                        return ev
                elif getattr(ev, "command_id", None) == command.id:
                    answers.append(ev)
                elif isinstance(ev, ErrorReply) and ev.message.startswith("refused"):
                    raise ClientError(ev.message)
            raise ClientError("the backend closed the connection before the command was applied")

        result = await asyncio.wait_for(_wait(), timeout)
        return result, answers
    finally:
        await client.close()
