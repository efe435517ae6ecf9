"""The control socket answers every connection, subscribed or not, and a flood of bad commands
is answered without flooding the run's durable log (a real socket, a real SQLite log)."""

import asyncio
import json

from backend.controller import Controller
from backend.protocol import PROTOCOL_VERSION, decode_event
from backend.runstore import RunStore
from backend.server import AUDIT_LIMIT, ControlServer
from backend.settings import load_profile


async def _server(tmp_path):
    run_dir = tmp_path / "run"
    store = RunStore(run_dir / "events.db")
    ctl = Controller(load_profile(None), run_id="proto", run_dir=run_dir, profile_name="t", store=store)
    server = ControlServer(ctl, run_dir / "control.sock")
    await server.start()
    return ctl, store, server, run_dir / "control.sock"


async def _read(reader):
    return decode_event(await asyncio.wait_for(reader.readline(), 5))


async def test_a_connection_that_never_subscribed_gets_its_answers(tmp_path):
    ctl, store, server, sock = await _server(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert (await _read(reader)).kind == "hello"
        writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "pause", "id": "p1"}) + "\n").encode())
        ok = await _read(reader)
        assert (ok.kind, ok.command_id, ok.status) == ("command_result", "p1", "accepted")
        writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "set_params", "id": "s1", "temperature": 9}) + "\n").encode())
        bad = await _read(reader)
        assert (bad.command_id, bad.status) == ("s1", "rejected") and "temperature" in bad.reason
        writer.close()
    finally:
        await server.stop()
        store.close()


async def test_a_flood_of_bad_commands_is_answered_and_summed_up_in_the_log(tmp_path):
    ctl, store, server, sock = await _server(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        await _read(reader)
        before = store.next_seq
        n = AUDIT_LIMIT + 30
        for i in range(n):
            writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "set_params", "id": f"b{i}", "top_p": 7}) + "\n").encode())
        answers = [await _read(reader) for _ in range(n)]
        assert [a.command_id for a in answers] == [f"b{i}" for i in range(n)]
        assert all(a.status == "rejected" for a in answers)
        writer.close()
        await asyncio.sleep(0.3)  # the handler notices the close and writes its summary
        events = list(store.read(before))
        rejected = [e for e in events if e.kind == "command_result"]
        summary = [e for e in events if e.kind == "log" and "answered but not logged" in e.message]
        assert len(rejected) == AUDIT_LIMIT and len(summary) == 1 and f"{n - AUDIT_LIMIT} further" in summary[0].message
    finally:
        await server.stop()
        store.close()


async def test_the_client_skips_event_kinds_it_does_not_know(tmp_path):
    """A newer backend may send an event kind (or field) this console does not know: the
    stream goes on, the frame is counted as skipped."""
    from console.client import BackendClient

    path = tmp_path / "s.sock"

    async def serve(reader, writer):
        writer.write(b'{"v":1,"kind":"hello","protocol":1,"run_id":"r","last_seq":2}\n')
        await reader.readline()  # subscribe
        writer.write(b'{"v":1,"kind":"log","seq":0,"ts":1.0,"message":"one"}\n')
        writer.write(b'{"v":1,"kind":"policy_probe","seq":1,"ts":1.0,"text":"from the future"}\n')
        writer.write(b'{"v":1,"kind":"log","seq":2,"ts":1.0,"message":"two"}\n')
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        client = BackendClient(path)
        await client.connect()
        got = [e async for e in client.events()]
        assert [e.message for e in got] == ["one", "two"] and client.skipped == 1
        assert "policy_probe" in client.last_skipped
        await client.close()
    finally:
        server.close()


async def test_a_waiting_console_takes_control_on_its_own_connection(tmp_path):
    """A console that waits as a viewer sends `subscribe` with take again on its connection: it
    controls the run from then on (same event stream), the holder turns viewer and is told
    by whom, and gets control back when the taker leaves. A --read-only viewer cannot take."""
    ctl, store, server, sock = await _server(tmp_path)

    async def connect(name, **sub):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert (await _read(reader)).kind == "hello"
        writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "subscribe", "id": f"sub-{name}", "from_seq": -1,
                                  "client": name, **sub}) + "\n").encode())
        return reader, writer

    async def control(reader):
        while True:
            ev = await _read(reader)
            if ev.kind == "control":
                return ev

    def send(writer, frame):
        writer.write((json.dumps({"v": PROTOCOL_VERSION, **frame}) + "\n").encode())

    try:
        r1, w1 = await connect("one")
        assert (await control(r1)).role == "controller"
        r2, w2 = await connect("two")
        waiting = await control(r2)
        assert waiting.role == "viewer" and waiting.holder.startswith("one")
        rv, wv = await connect("watcher", role="view")
        assert (await control(rv)).role == "viewer"

        send(w2, {"kind": "subscribe", "id": "take-2", "take": True})
        now = await control(r2)
        assert now.role == "controller"
        lost = await control(r1)
        assert lost.role == "viewer" and lost.holder.startswith("two") and "control taken by two" in lost.reason
        send(w2, {"kind": "pause", "id": "p2"})  # the taker's commands are accepted on the same stream
        while not ((ev := await _read(r2)).kind == "command_result" and ev.command_id == "p2"):
            pass
        assert ev.status == "accepted"
        send(w1, {"kind": "resume", "id": "r1"})  # the old holder's are not
        while not ((ev := await _read(r1)).kind == "command_result" and ev.command_id == "r1"):
            pass
        assert ev.status == "rejected" and "two" in ev.reason

        send(wv, {"kind": "subscribe", "id": "take-v", "take": True})
        told = await control(rv)
        assert told.role == "viewer" and "control taken by two" in told.reason  # (every console hears of the take)
        refused = await control(rv)
        assert refused.role == "viewer" and "attached --read-only" in refused.reason

        w2.close()  # the taker leaves: control goes back to the console it was taken from
        back = await control(r1)
        assert back.role == "controller" and "two" in back.reason and "released control" in back.reason
        for w in (w1, wv):
            w.close()
    finally:
        await server.stop()
        store.close()
