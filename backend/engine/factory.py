"""Pick the engine a profile asks for. Local and Ray engines share `RolloutEngine`."""

from __future__ import annotations

from backend.protocol.paths import home
from backend.settings import RunProfile


def make_engine(profile: RunProfile, model_path: str, device: str, dtype: str):
    e = profile.engine
    common = dict(
        device=device,
        dtype=dtype,
        max_model_len=e.max_model_len,
        enforce_eager=e.enforce_eager,
        kv_cache_gb=e.kv_cache_gb,
        gpu_memory_utilization=e.gpu_memory_utilization,
        seed=profile.run.seed,
        cache_root=str(home() / "cache"),
    )
    if e.backend == "ray":
        from backend.engine.ray_actor import RayEngine

        return RayEngine(model_path, replicas=e.replicas, ray_settings=profile.ray, **common)
    from backend.engine.local import LocalVLLMEngine

    return LocalVLLMEngine(model_path, **common)
