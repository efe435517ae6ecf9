"""The wire protocol's edges, each as an outside client found it: every one is a clear
ProtocolError (or a strict refusal), never a crash of the connection handler."""

import json

import pytest

from backend.protocol import PROTOCOL_VERSION, ProtocolError, decode_command, encode_event
from backend.protocol import events as E


def frame(**fields) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **fields}).encode()


def test_deep_nesting_is_refused_before_parsing():
    deep = b'{"v":1,"kind":"pause","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(ProtocolError, match="nests deeper"):
        decode_command(deep)
    with pytest.raises(ProtocolError):
        decode_command(b'{"v":1,"kind":"pause","id":"a","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_a_lone_surrogate_or_odd_id_is_refused_and_answers_encode():
    with pytest.raises(ProtocolError) as info:
        decode_command('{"v":1,"kind":"pause","id":"\\ud800"}')
    assert info.value.command_id is None  # not echoed back: it could not be encoded
    with pytest.raises(ProtocolError):
        decode_command(frame(kind="pause", id="has space"))
    ok = decode_command(frame(kind="pause", id="ctl-42.a_b"))
    assert ok.id == "ctl-42.a_b"
    encode_event(E.CommandResult(command_id=ok.id, command="pause", status="accepted"))


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"v": True, "kind": "pause"}, "protocol version True"),
        ({"kind": "stop", "checkpoint": "yes"}, "checkpoint"),
        ({"kind": "set_params", "id": "a", "temperature": "0.5"}, "temperature"),
        ({"kind": "subscribe", "from_seq": "3"}, "from_seq"),
    ],
)
def test_no_coercion(fields, why):
    data = {"v": PROTOCOL_VERSION, **fields}
    with pytest.raises(ProtocolError, match=why):
        decode_command(json.dumps(data))


def test_non_finite_numbers_are_not_numbers_here():
    with pytest.raises(ProtocolError, match="NaN is not a JSON number"):
        decode_command(b'{"v":1,"kind":"set_params","id":"a","temperature":NaN}')
    with pytest.raises(ProtocolError, match="Infinity"):
        decode_command(b'{"v":1,"kind":"set_params","id":"a","learning_rate":-Infinity}')


def test_an_integer_is_still_a_float_and_valid_commands_pass():
    cmd = decode_command(frame(kind="set_params", id="a", temperature=1, max_tokens=8))
    assert cmd.temperature == 1.0 and cmd.max_tokens == 8
    assert decode_command(frame(kind="stop", checkpoint=False)).checkpoint is False


def test_brackets_inside_strings_do_not_count_and_huge_numbers_are_refused():
    ok = decode_command(frame(kind="subscribe", client="[[[[[[[[[[[[[[[[[[[[ my tool ]]]]]]]]]]]]]]]]]]]]"))
    assert ok.client.startswith("[[[")
    with pytest.raises(ProtocolError, match="out of range"):
        decode_command(b'{"v":1,"kind":"set_params","id":"a","temperature":1e400}')
