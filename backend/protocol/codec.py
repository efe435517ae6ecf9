"""Wire encoding: one JSON object per line (NDJSON), UTF-8, size-limited.

Frames carry `"v": PROTOCOL_VERSION`. Both directions use the same framing; the
server decodes commands, clients decode events.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from backend.protocol.commands import COMMAND_TYPES, Command
from backend.protocol.events import Event

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1 << 20  # 1 MiB: a SampleGroup of 64 long completions fits
MAX_COMMAND_DEPTH = 16  # commands are flat objects: deeper nesting is refused before parsing

_EVENT = TypeAdapter(Event)
COMMAND_KINDS = frozenset(t.model_fields["kind"].default for t in COMMAND_TYPES)
_COMMAND = TypeAdapter(Command)
_ID = re.compile(r"[\x21-\x7e]{1,64}")  # a command id that can be echoed in an answer (as commands.py checks)


class ProtocolError(ValueError):
    """A frame that cannot be accepted: bad JSON, wrong version, unknown kind, bad fields.

    `kind` and `command_id` are set when the frame named a known command kind and an id:
    such a command was well-formed but invalid, and deserves a `CommandResult` rejection.
    """

    def __init__(self, message: str, *, kind: str | None = None, command_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.command_id = command_id


_VERSION_PREFIX = b'{"v":%d,' % PROTOCOL_VERSION


def _encode(model: Any) -> bytes:
    # pydantic's Rust serializer, ~4x faster than model_dump + json.dumps for a SampleGroup
    # (the backend encodes each event twice: for the log and for the clients)
    body = model.__pydantic_serializer__.to_json(model)
    if b"NaN" in body or b"Infinity" in body or body[:1] != b"{" or body == b"{}":
        # a non-finite number (the wire models serialize it as a JSON constant), or only those
        # words inside a text: the strict encoder decides, and refuses a non-finite number
        return _encode_strict(model)
    return _VERSION_PREFIX + body[1:] + b"\n"


def _encode_strict(model: Any) -> bytes:
    data = model.model_dump(mode="json")
    data["v"] = PROTOCOL_VERSION
    line = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return line.encode() + b"\n"


def encode_event(event: Any) -> bytes:
    return _encode(event)


def encode_command(command: Any) -> bytes:
    return _encode(command)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(line: bytes) -> int:
    """Deepest bracket nesting of a frame, outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _parse(line: bytes | str, what: str) -> dict[str, Any]:
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogatepass")
    if len(line) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{what} frame of {len(line)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    if what == "command" and line.count(b"[") + line.count(b"{") > MAX_COMMAND_DEPTH and _depth(line) > MAX_COMMAND_DEPTH:
        raise ProtocolError(f"command frame nests deeper than {MAX_COMMAND_DEPTH} levels")
    try:  # strict JSON: NaN/Infinity are not numbers on this wire
        data = json.loads(line, parse_constant=_no_constants, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nests too deeply" if isinstance(exc, RecursionError) else f"is not valid JSON: {exc}"
        raise ProtocolError(f"{what} frame {why}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} frame must be a JSON object, got {type(data).__name__}")
    version = data.pop("v", None)
    if type(version) is not int or version != PROTOCOL_VERSION:  # `true` is not version 1
        raise ProtocolError(f"{what} frame has protocol version {version!r}; this side speaks {PROTOCOL_VERSION}")
    if "kind" not in data:
        raise ProtocolError(f"{what} frame has no 'kind'")
    return data


def explain(exc: ValidationError) -> str:
    """pydantic's messages, one per field: 'temperature: Input should be less than or equal to 2'
    (list positions left out). The one wording for a refused command or event, on both sides;
    profile errors get more (the file, the value, the allowed range: `settings.load_profile`)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def decode_event(line: bytes | str) -> Any:
    data = _parse(line, "event")
    try:
        return _EVENT.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(f"bad event ({data.get('kind')!r}): {explain(exc)}") from None


def decode_command(line: bytes | str) -> Any:
    """A command from the wire, validated strictly: no coercion ("0.5" is not a number,
    "yes" is not a boolean); an integer is accepted where a float is expected."""
    data = _parse(line, "command")
    try:
        return _COMMAND.validate_python(data, strict=True)
    except ValidationError as exc:
        kind, cid = data.get("kind"), data.get("id")
        known = isinstance(kind, str) and kind in COMMAND_KINDS and isinstance(cid, str) and _ID.fullmatch(cid) is not None
        raise ProtocolError(
            f"bad command ({kind!r}): {explain(exc)}",
            kind=kind if known else None,
            command_id=cid if known else None,
        ) from None


def event_from_dict(data: dict[str, Any]) -> Any:
    return _EVENT.validate_python(data)


def command_from_dict(data: dict[str, Any]) -> Any:
    """Validate a command given as a dict (no version field needed)."""
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(f"bad command ({data.get('kind')!r}): {explain(exc)}") from None
