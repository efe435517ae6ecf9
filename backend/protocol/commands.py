"""Commands: imperatives a client sends. Frozen, discriminated by `kind`.

Each carries an `id` so the `CommandResult` that answers it can be matched.
"""

from __future__ import annotations

import uuid
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
SetParams = create_model(
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


Command = Annotated[
    Union[Subscribe, Pause, Resume, ResyncWeights, SetParams, Checkpoint, Stop],
    Field(discriminator="kind"),
]

COMMAND_TYPES = (Subscribe, Pause, Resume, ResyncWeights, SetParams, Checkpoint, Stop)
