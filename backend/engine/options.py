"""How a vLLM engine is built: one typed object, made once from the profile (`from_profile`,
called by `factory.make_engine`) and passed to `LocalVLLMEngine`, or to `RayEngine`, which
hands it to every replica's `LocalVLLMEngine`.

The fields that come from the profile reuse the profile's own declarations (default, range,
help text), so each option is declared once. A field that is not an option, or a value out of
range, is refused with pydantic's message naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.settings import EngineSection, RunProfile, RunSection

_ENGINE = EngineSection.model_fields

#: [engine] fields that are options of every engine, copied as they are
FROM_ENGINE_SECTION = ("max_model_len", "enforce_eager", "kv_cache_gb", "gpu_memory_utilization")
#: [engine] fields that are not: each is used where it says
NOT_ENGINE_OPTIONS = {
    "backend": "which engine class (factory.make_engine)",
    "replicas": "RayEngine's own argument",
    "device": 'resolved first ("auto" -> cpu | cuda), then passed as EngineOptions.device',
    "verify_every": "the session's canary schedule",
    "sync_deadline_s": "the session's watchdog on a weight sync",
    "canary_tolerance": "the session's canary",
    "canary_noise_factor": "the session's canary",
    "canary_max_noise": "the session's canary",
    "core": 'resolved first ("auto" -> in_process | own_process), then passed as EngineOptions.own_process',
}


class EngineOptions(BaseModel):
    """What `LocalVLLMEngine` (and each Ray replica) is built with. Frozen: an engine's options
    never change after start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Literal["cpu", "cuda"] = Field("cpu", description='where vLLM runs (engine.device with "auto" resolved)')
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description='the dtype vLLM serves (model.dtype with "auto" resolved); every weight sync casts to it'
    )
    max_model_len: int = _ENGINE["max_model_len"]
    enforce_eager: bool = _ENGINE["enforce_eager"]
    kv_cache_gb: float = _ENGINE["kv_cache_gb"]
    gpu_memory_utilization: float = _ENGINE["gpu_memory_utilization"]
    seed: int = RunSection.model_fields["seed"]
    cache_root: str | None = Field(None, description="vLLM's and torch inductor's compile caches go under it (and Ray's temp dir)")
    verify_received: bool = Field(
        False,
        description="fingerprint the weights as the worker received them and refuse a mismatch: worth it where they "
        "crossed a process boundary (a Ray replica); in-process they are the trainer's own tensors",
    )

    own_process: bool = Field(
        False,
        description="the engine in a child process of its own (engine.core resolved; hosted.HostedEngine): on CUDA the "
        "trainer's mirror is shared with it by CUDA IPC once, and each push is one call that copies from it",
    )

    @classmethod
    def from_profile(cls, profile: RunProfile, *, device: str, dtype: str, cache_root: str | None) -> EngineOptions:
        """The options a run's profile asks for; `device` and `dtype` already resolved."""
        e = profile.engine
        return cls(device=device, dtype=dtype, seed=profile.run.seed, cache_root=cache_root,
                   own_process=resolve_core(profile, device) == "own_process",
                   **{name: getattr(e, name) for name in FROM_ENGINE_SECTION})


def resolve_core(profile: RunProfile, device: str) -> str:
    """engine.core with "auto" resolved for a run on `device` (already resolved); a choice that
    cannot work is refused with the reason."""
    core = profile.engine.core
    if core == "auto":
        own = device == "cuda" and profile.training.overlap and profile.engine.backend == "local"
        return "own_process" if own else "in_process"
    if core == "own_process":
        if profile.engine.backend != "local":
            raise ValueError('engine.core = "own_process" is for the local backend; a Ray replica already runs in its '
                             'own process: set engine.core = "auto"')
    return core
