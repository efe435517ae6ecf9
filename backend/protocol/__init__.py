"""The one schema both sides share. Imports only the standard library and pydantic."""

from backend.protocol.codec import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    command_from_dict,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    explain,
)
from backend.protocol.commands import *  # noqa: F401,F403
from backend.protocol.commands import COMMAND_TYPES, Command
from backend.protocol.events import *  # noqa: F401,F403
from backend.protocol.events import EVENT_TYPES, Event
from backend.protocol.params import LIVE_PARAMS

__all__ = [
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "command_from_dict",
    "decode_command",
    "decode_event",
    "encode_command",
    "encode_event",
    "explain",
    "COMMAND_TYPES",
    "Command",
    "EVENT_TYPES",
    "Event",
    "LIVE_PARAMS",
]
