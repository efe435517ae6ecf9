"""Live-tunable run parameters: one set of typed bounds shared by profiles and commands.

The profile's `[sampling]` / `[training]` sections and the `SetParams` command both use
these annotated types, so a value the profile would refuse is refused mid-run for the
same reason, with the same message.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Temperature = Annotated[float, Field(gt=0.0, le=2.0, description="sampling temperature (> 0: GRPO needs varied completions; ≤ 2: vLLM's own limit)")]
TopP = Annotated[float, Field(gt=0.0, le=1.0, description="nucleus sampling mass")]
TopK = Annotated[int, Field(ge=-1, le=100_000, description="top-k cut-off (-1 or 0 = off)")]
MaxTokens = Annotated[int, Field(ge=1, le=131_072, description="max completion tokens")]
NumGenerations = Annotated[int, Field(ge=2, le=1024, description="completions per prompt (group size G)")]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0, description="optimizer learning rate")]
Beta = Annotated[float, Field(ge=0.0, le=10.0, description="KL penalty coefficient")]

#: names a SetParams command may carry, in display order
LIVE_PARAMS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "num_generations",
    "learning_rate",
    "beta",
)
