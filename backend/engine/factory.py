"""Pick the engine a profile asks for. Local and Ray engines share `RolloutEngine` and are built
with one `EngineOptions`."""

from __future__ import annotations

from backend.engine.options import EngineOptions
from backend.protocol.paths import home
from backend.settings import RunProfile


def make_engine(profile: RunProfile, model_path: str, device: str, dtype: str):
    options = EngineOptions.from_profile(profile, device=device, dtype=dtype, cache_root=str(home() / "cache"))
    if profile.engine.backend == "ray":
        from backend.engine.ray_engine import RayEngine

        return RayEngine(model_path, options, replicas=profile.engine.replicas, ray_settings=profile.ray)
    if options.own_process:
        from backend.engine.hosted import HostedEngine

        return HostedEngine(model_path, options)
    from backend.engine.local import LocalVLLMEngine

    return LocalVLLMEngine(model_path, options)
