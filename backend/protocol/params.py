"""Live-tunable run parameters: one set of typed bounds shared by profiles and commands.

The profile's `[sampling]` / `[training]` sections and the `SetParams` command both use
these annotated types, so a value the profile would refuse is refused mid-run for the
same reason, with the same message.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.fields import FieldInfo

Temperature = Annotated[float, Field(gt=0.0, le=2.0, description="sampling temperature (> 0: GRPO needs varied completions; ≤ 2: vLLM's own limit)")]
TopP = Annotated[float, Field(gt=0.0, le=1.0, description="nucleus sampling mass")]
TopK = Annotated[int, Field(ge=-1, le=100_000, description="top-k cut-off (-1 or 0 = off)")]
MaxTokens = Annotated[int, Field(ge=1, le=131_072, description="max completion tokens")]
NumGenerations = Annotated[int, Field(
    ge=2, le=1024, description="completions per prompt (group size G); prompts_per_step × G must divide by training.micro_batches"
)]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0, description="optimizer learning rate")]
Beta = Annotated[float, Field(ge=0.0, le=10.0, description="KL penalty coefficient")]

@dataclass(frozen=True)
class LiveParam:
    """One parameter an operator can change mid-run: the single declaration from which the
    `SetParams` command, the profile section's field, the console's form (range, help) and
    the controller's checks are derived. Adding a live parameter = one line here; how it is
    applied follows from `applies` (`backend.training.step.APPLY`, which names the exceptions).
    One that `applies` to sampling reaches the engine's vLLM `SamplingParams` as the field
    `vllm` names (default: its own name), through `Sampling.live`, and a change to it is checked
    against the installed vLLM's own rules before it is accepted."""

    name: str
    type: Any  # Annotated[..., Field(bounds, description)]
    default: Any
    section: Literal["sampling", "training"]  # the profile table it lives in
    applies: Literal["sampling", "optimizer", "loss", "restart"]  # where a change takes effect
    vllm: str = ""  # applies="sampling": the vLLM `SamplingParams` field it fills ("" = its own name)

    @property
    def info(self) -> FieldInfo:
        return typing.get_args(self.type)[1]

    @property
    def description(self) -> str:
        return self.info.description or ""

    @property
    def engine_field(self) -> str | None:
        """The vLLM `SamplingParams` field this parameter fills (None: not a sampling parameter)."""
        return (self.vllm or self.name) if self.applies == "sampling" else None


PARAMS: tuple[LiveParam, ...] = (
    LiveParam("temperature", Temperature, 1.0, "sampling", "sampling"),  # the loss uses it too
    LiveParam("top_p", TopP, 1.0, "sampling", "sampling"),
    LiveParam("top_k", TopK, -1, "sampling", "sampling"),
    LiveParam("max_tokens", MaxTokens, 6, "sampling", "sampling"),
    LiveParam("num_generations", NumGenerations, 8, "sampling", "restart"),  # TRL builds G into its sampler
    LiveParam("learning_rate", LearningRate, 1e-3, "training", "optimizer"),
    LiveParam("beta", Beta, 0.0, "training", "loss"),
)
BY_NAME: dict[str, LiveParam] = {p.name: p for p in PARAMS}

#: names a SetParams command may carry, in display order
LIVE_PARAMS: tuple[str, ...] = tuple(p.name for p in PARAMS)
#: the parameters the engine's sampling takes: a change to one is checked against the installed vLLM
SAMPLING_PARAMS: frozenset[str] = frozenset(p.name for p in PARAMS if p.section == "sampling")
#: the parameters each rollout's vLLM `SamplingParams` carries (`applies="sampling"`), in order
ENGINE_PARAMS: tuple[str, ...] = tuple(p.name for p in PARAMS if p.engine_field)


def engine_sampling(values: Mapping[str, Any]) -> dict[str, Any]:
    """The engine sampling parameters among live `values` (every one of them: a KeyError names a
    missing one), keyed by the vLLM `SamplingParams` field each fills: what `Sampling.params` holds."""
    return {key: values[p.name] for p in PARAMS if (key := p.engine_field)}


def param_range(name: str) -> str:
    """'>0…2' style bounds read from the parameter's annotated type ('>' / '<' = exclusive)."""
    lo = hi = ""
    for m in BY_NAME[name].info.metadata:
        if hasattr(m, "ge"):
            lo = f"{m.ge:g}"
        elif hasattr(m, "gt"):
            lo = f">{m.gt:g}"
        elif hasattr(m, "le"):
            hi = f"{m.le:g}"
        elif hasattr(m, "lt"):
            hi = f"<{m.lt:g}"
    return f"{lo}…{hi}"


def section_fields(section: str) -> dict[str, Any]:
    """pydantic `create_model` field definitions of one profile section's live parameters."""
    return {p.name: (p.type, p.default) for p in PARAMS if p.section == section}
