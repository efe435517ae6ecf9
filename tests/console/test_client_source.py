"""The app on the real BackendClient, against a minimal protocol-speaking Unix socket server."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from backend.protocol import PROTOCOL_VERSION, decode_command, encode_event
from backend.protocol.commands import Pause, Subscribe
from backend.protocol.events import CommandResult, Hello
from console.app import RLConsoleApp
from console.client import BackendClient


async def test_app_over_real_client_and_socket(kit):
    received: list = []
    events = kit.make_run(steps=3)
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_event(Hello(protocol=PROTOCOL_VERSION, run_id=kit.RUN_ID, last_seq=len(events) - 1)))
        await writer.drain()
        received.append(decode_command(await reader.readline()))
        for event in events:
            writer.write(encode_event(event))
        await writer.drain()
        while line := await reader.readline():
            command = decode_command(line)
            received.append(command)
            writer.write(encode_event(CommandResult(command_id=command.id, command=command.kind, status="accepted", ts=kit.TS0 + 70)))
            await writer.drain()
            if isinstance(command, Pause):
                break
        writer.close()  # the backend goes away
        done.set()

    with tempfile.TemporaryDirectory(prefix="rlc") as tmp:
        path = Path(tmp) / "control.sock"
        server = await asyncio.start_unix_server(handle, path=str(path))
        async with server:
            app = RLConsoleApp(BackendClient(path))
            async with app.run_test(size=(80, 24)) as pilot:
                await kit.wait_for(pilot, lambda: app.state.events_seen == len(events), what="history over the socket")
                assert isinstance(received[0], Subscribe) and received[0].from_seq == 0
                await kit.settle(pilot)
                assert "step 3" in kit.screen_text(app).splitlines()[0]
                await pilot.press("p")
                await kit.wait_for(pilot, lambda: ("information", "pause accepted") in app.status_history, what="answer")
                assert isinstance(received[-1], Pause)
                await asyncio.wait_for(done.wait(), 5)
                await kit.wait_for(pilot, lambda: app.state.connection == "disconnected", what="disconnect seen")
                await kit.settle(pilot)
                assert "DISCONNECTED" in kit.screen_text(app).splitlines()[0]
                await pilot.press("q")
            assert app.return_code == 0


def test_a_client_names_its_user_once_and_no_fake_terminal(monkeypatch):
    """How other consoles see this one: 'rl-console alice@pts/3', or without a terminal
    'rl-console alice' (the server adds pid and uid: the uid is not named twice)."""
    import os

    from console import client

    monkeypatch.setattr(client.sys, "argv", ["/usr/bin/rl-console"])
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setattr(os, "ttyname", lambda fd: "/dev/pts/3")
    assert client.describe_self() == "rl-console alice@pts/3"

    def no_tty(fd):
        raise OSError("not a tty")

    monkeypatch.setattr(os, "ttyname", no_tty)
    assert client.describe_self() == "rl-console alice"
    monkeypatch.delenv("USER")
    monkeypatch.delenv("LOGNAME", raising=False)
    assert "uid" not in client.describe_self()
