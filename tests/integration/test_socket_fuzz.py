"""≥ 1,000 random, truncated, oversized and wrong-schema frames at a live run's socket:
no crash, every well-formed bad command answered with a rejection, the run goes on."""

import asyncio
import json
import os
import random
import stat
import subprocess
import sys
import time

import pytest

from backend.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, decode_event, encode_command
from backend.protocol import commands as C
from backend.protocol.paths import socket_path
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


async def _open(sock):
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=MAX_FRAME_BYTES * 2)
    hello = decode_event(await reader.readline())
    assert hello.kind == "hello"
    writer.write(encode_command(C.Subscribe(from_seq=-1)))
    await writer.drain()
    return reader, writer


async def _collect(reader, until, timeout=30.0):
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = await asyncio.wait_for(reader.readline(), max(0.05, end - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if not line:
            break
        seen.append(decode_event(line))
        if until(seen):
            break
    return seen


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ") + b"\n"
    if kind == 1:
        full = json.dumps({"v": PROTOCOL_VERSION, "kind": "pause", "id": "t"})
        return full[: rng.randrange(1, len(full))].encode() + b"\n"
    if kind == 2:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": rng.choice(["explode", "", "hello", 5]), "id": "x"}).encode() + b"\n"
    if kind == 3:
        return json.dumps({"v": rng.choice([0, 2, "1", None]), "kind": "pause", "id": "x"}).encode() + b"\n"
    return json.dumps(rng.choice([[1, 2], "str", 3, None, {"no": "kind", "v": PROTOCOL_VERSION}])).encode() + b"\n"


def test_fuzzed_socket_run_survives(rlc_home):
    env = backend_env(rlc_home)
    out = subprocess.run(RLC + ["run", "--detach", "--max-steps", "100000", "--set", "training.prompts_per_step=4"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[1]
    os.environ["RLC_HOME"] = env["RLC_HOME"]
    sock = socket_path(run_id)
    # only the owner may connect: the socket is 0600 inside a 0700 directory
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

    async def fuzz():
        rng = random.Random(1234)
        # 1) 900 malformed / wrong-schema frames over 10 connections: each answered by an error
        #    reply (a connection sending 100 bad frames in a row is closed, so 90 per connection)
        for _ in range(10):
            reader, writer = await _open(sock)
            for _ in range(90):
                writer.write(_garbage(rng))
            await writer.drain()
            errors = await _collect(reader, lambda s: sum(e.kind == "error" for e in s) >= 90, timeout=20)
            assert sum(e.kind == "error" for e in errors) == 90
            writer.close()
        # 2) 120 well-formed commands with bad values: every one rejected with a reason, audited
        reader, writer = await _open(sock)
        ids = []
        for i in range(120):
            field, value = rng.choice([("temperature", 99), ("top_p", 0), ("num_generations", 1), ("max_tokens", 0),
                                       ("learning_rate", -1), ("beta", -3), ("temperature", "hot")])
            ids.append(f"bad-{i}")
            writer.write((json.dumps({"v": PROTOCOL_VERSION, "kind": "set_params", "id": ids[-1], field: value}) + "\n").encode())
        await writer.drain()
        got = await _collect(reader, lambda s: {e.command_id for e in s if e.kind == "command_result"} >= set(ids))
        results = {e.command_id: e for e in got if e.kind == "command_result"}
        assert set(ids) <= set(results) and all(results[i].status == "rejected" and results[i].reason for i in ids)
        writer.close()
        # 3) oversized frames: an error reply, the connection is closed, nothing else happens
        for _ in range(3):
            reader, writer = await _open(sock)
            writer.write(b'{"v":1,"kind":"pause","id":"' + b"x" * (MAX_FRAME_BYTES + 10) + b'"}\n')
            await writer.drain()
            reply = await _collect(reader, lambda s: any(e.kind == "error" for e in s), timeout=10)
            assert any(e.kind == "error" and "exceeds" in e.message for e in reply)
            writer.close()
        # 4) the run is untouched: it answers a real command and keeps stepping
        reader, writer = await _open(sock)
        pause = C.Pause()
        writer.write(encode_command(pause))
        await writer.drain()
        res = await _collect(reader, lambda s: any(e.kind == "command_result" and e.command_id == pause.id for e in s))
        assert any(e.kind == "command_result" and e.command_id == pause.id and e.status == "accepted" for e in res)
        writer.close()

    try:
        t0 = time.monotonic()
        while json.loads(subprocess.run(RLC + ["status", run_id, "--json"], env=env, capture_output=True, text=True).stdout)["step"] < 2:
            assert time.monotonic() - t0 < 180
            time.sleep(0.5)
        asyncio.run(fuzz())
        status = json.loads(subprocess.run(RLC + ["status", run_id, "--json"], env=env, capture_output=True, text=True).stdout)
        assert status["alive"] and status["state"] in ("pausing", "paused")
    finally:
        subprocess.run(RLC + ["ctl", run_id, "stop"], env=env, capture_output=True, timeout=30)
