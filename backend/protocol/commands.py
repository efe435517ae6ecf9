"""Commands: imperatives a client sends. Frozen, discriminated by `kind`.

Each carries an `id` so the `CommandResult` that answers it can be matched.
"""

from __future__ import annotations

import shlex
import typing
import uuid
from collections.abc import Sequence
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, Field, create_model, model_validator

from backend.protocol.params import LIVE_PARAMS, PARAMS
from backend.protocol.wire import WIRE


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class _Command(BaseModel):
    model_config = WIRE
    # printable ASCII: an id is echoed in every answer and the run log, so it must encode anywhere
    id: str = Field(default_factory=_new_id, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")


class Subscribe(_Command):
    """Ask for events from `from_seq` on (history first, then live), as the run's controller
    or as a viewer. One connection controls a run at a time; a `control` request made while
    another connection holds control waits as a viewer and is promoted when it leaves;
    `take` moves control to this connection (the previous holder becomes a viewer)."""

    kind: Literal["subscribe"] = "subscribe"
    from_seq: int = 0
    role: Literal["control", "view"] = "control"
    take: bool = False
    client: str = Field("", max_length=200, description="who is connecting, shown to the other clients")
    token: str = Field("", max_length=200, description="the run's token: required on TCP connections")


class Pause(_Command):
    kind: Literal["pause"] = "pause"


class Resume(_Command):
    kind: Literal["resume"] = "resume"


class ResyncWeights(_Command):
    kind: Literal["resync"] = "resync"


class _SetParamsBase(_Command):
    kind: Literal["set_params"] = "set_params"

    @model_validator(mode="after")
    def _at_least_one(self) -> "_SetParamsBase":
        if not self.changes():
            raise ValueError(f"set_params needs at least one of: {', '.join(LIVE_PARAMS)}")
        return self

    def changes(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in LIVE_PARAMS if getattr(self, k) is not None}


#: a change of live parameters: one optional field per entry of `params.PARAMS`, same bounds
SetParams = create_model(  # type: ignore[call-overload]  # fields from the registry
    "SetParams",
    __base__=_SetParamsBase,
    __module__=__name__,
    **{p.name: (Optional[p.type], None) for p in PARAMS},
)
SetParams.__doc__ = "Change live parameters at the next step boundary (at least one; each within its range)."


class Checkpoint(_Command):
    kind: Literal["checkpoint"] = "checkpoint"


class Stop(_Command):
    kind: Literal["stop"] = "stop"
    checkpoint: bool = True


_SAMPLING = {p.name: p.type for p in PARAMS if p.section == "sampling" and p.name != "num_generations"}
# the playground may also decode greedily (temperature 0), which a training run may not
_SAMPLING["temperature"] = Annotated[float, Field(ge=0.0, le=2.0, description="sampling temperature (0 = greedy)")]

_TryBase = create_model(  # type: ignore[call-overload]  # fields from the registry
    "_TryBase",
    __base__=_Command,
    __module__=__name__,
    **{name: (Optional[t], None) for name, t in _SAMPLING.items()},
)


class TryPrompt(_TryBase):  # type: ignore[misc,valid-type]  # a create_model class
    """The playground: sample the live engine at its current weights, between two steps, with
    this prompt (a user message when the task is conversational), `n` times. Sampling fields
    left out take the run's live values. `columns` are the dataset columns the run's reward
    functions need (e.g. the expected answer), to score the outputs. Answered with a
    `TryResult`; the run's step, data and weights are not touched."""

    kind: Literal["try"] = "try"
    prompt: str = Field(min_length=1, max_length=100_000)
    n: int = Field(1, ge=1, le=64, description="completions to sample")
    columns: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=32)

    def overrides(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in _SAMPLING if getattr(self, k) is not None}


def parse_columns(raw: str | Sequence[str]) -> dict[str, str]:
    """A try's dataset columns from `NAME=VALUE` pairs: one line as typed in the console's form
    (`answer=olleh hint="two words"`, split like a shell line) or the CLI's `--column` arguments
    (already split by the shell, one pair each). A value is everything after the first `=`: it may
    be empty or hold `=`. A ValueError names what is wrong: an unclosed quote, a pair without `=`
    or without a name, a name given twice (the first value would be lost)."""
    if isinstance(raw, str):
        try:
            raw = shlex.split(raw)
        except ValueError as exc:  # shlex says "No closing quotation"
            raise ValueError(f"columns: {exc}") from None
    out: dict[str, str] = {}
    for part in raw:
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"columns: {part!r} is not NAME=VALUE (a dataset column the reward functions read, e.g. answer=5)")
        if name in out:
            raise ValueError(f"columns: {name!r} is given twice ({out[name]!r} and {value!r}); give each column once")
        out[name] = value
    return out


Command = Annotated[
    Union[Subscribe, Pause, Resume, ResyncWeights, SetParams, Checkpoint, Stop, TryPrompt],  # type: ignore[valid-type]
    Field(discriminator="kind"),
]

COMMAND_TYPES = tuple(typing.get_args(typing.get_args(Command)[0]))
