"""Fan-out of a run's events (a real socket, a real SQLite log, the real bus): each event is
encoded once, for the log and the clients alike, and the event loop is woken only when a
client is there to write to, without a client that connects meanwhile missing a frame."""

import asyncio
import json
import random
import threading

import backend.runstore
import backend.server
from backend.controller import Controller
from backend.protocol import PROTOCOL_VERSION, decode_event
from backend.protocol import events as E
from backend.protocol.codec import encode_event
from backend.runstore import RunStore
from backend.server import ControlServer
from backend.settings import load_profile


async def _server(tmp_path):
    run_dir = tmp_path / "run"
    store = RunStore(run_dir / "events.db")
    ctl = Controller(load_profile(None), run_id="fan", run_dir=run_dir, profile_name="t", store=store)
    server = ControlServer(ctl, run_dir / "control.sock")
    await server.start()
    return ctl, store, server, run_dir / "control.sock"


async def _subscribe(sock, from_seq):
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 22)
    assert decode_event(await asyncio.wait_for(reader.readline(), 5)).kind == "hello"
    writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "subscribe", "id": "s", "from_seq": from_seq, "role": "view"}) + "\n").encode())
    return reader, writer


async def _frames_until(reader, seq):
    """The event frames (raw lines) a client receives up to and including `seq`."""
    out = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        ev = decode_event(line)
        if ev.seq < 0:  # not a logged event (the connection's control status)
            continue
        out.append(line)
        if ev.seq >= seq:
            return out


def _group(step):
    return E.SampleGroup(step=step, group=0, prompt="p", weight_version=1, reward_mean=0.5, reward_std=0.5,
                         completions=[E.Completion(text=f"answer {k} " * 20, rewards={"f": k / 8}, reward=k / 8,
                                                   advantage=0.1, length=20, truncated=False) for k in range(8)])


async def test_each_event_is_encoded_once_for_the_log_and_the_clients(tmp_path, monkeypatch):
    calls = {"store": 0, "server": 0}

    def counting(where):
        def encode(ev):
            calls[where] += 1
            return encode_event(ev)
        return encode

    monkeypatch.setattr(backend.runstore, "encode_event", counting("store"))
    monkeypatch.setattr(backend.server, "encode_event", counting("server"))
    ctl, store, server, sock = await _server(tmp_path)
    try:
        first = store.next_seq
        before = dict(calls)
        batch = [_group(s) for s in range(6)] + [E.LogLine(message=f"line {i}") for i in range(4)]
        await asyncio.to_thread(ctl.bus.emit_many, batch)
        last = store.next_seq - 1
        assert calls["store"] - before["store"] == len(batch)  # once each, for the log ...
        assert calls["server"] == before["server"]  # ... and not again for the clients
        # the tail the clients are served from holds the very frames the log stored
        with server.feed.lock:
            tail = server.feed.frames[first - server.feed.base:]
        assert tail == store.read_raw(first, last + 1)
        reader, writer = await _subscribe(sock, first)
        got = await _frames_until(reader, last)
        assert got == tail  # byte for byte what the log holds
        assert [decode_event(x).seq for x in got] == list(range(first, last + 1))
        writer.close()
    finally:
        await server.stop()
        store.close()


async def test_a_client_connecting_while_events_are_logged_misses_none(tmp_path):
    """With nobody attached the loop is not woken. A client attaching while an event is being
    logged (the event's wake skipped or not) still gets it: 40 attaches, each racing one event
    against the subscription at a random moment; each must receive its event."""
    ctl, store, server, sock = await _server(tmp_path)
    rng = random.Random(7)
    try:
        for i in range(40):
            assert not server.clients
            seq = store.next_seq
            delay = rng.uniform(0, 0.004)
            go = threading.Event()

            def emit(i=i, delay=delay, go=go):
                go.wait(5)
                threading.Event().wait(delay)
                ctl.bus.emit(E.LogLine(message=f"event {i}"))

            t = threading.Thread(target=emit)
            t.start()
            go.set()
            reader, writer = await _subscribe(sock, seq)
            got = await _frames_until(reader, seq)
            assert decode_event(got[-1]).message == f"event {i}"
            t.join()
            writer.close()
            await writer.wait_closed()
            for _ in range(100):  # the server notices the close
                if not server.clients:
                    break
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
        store.close()
