"""The Ray cluster under `RayEngine`: join one (`ray.address`), or start a private local one
sized for the replicas (CPUs, the GPUs the trainer leaves, an object store for a few copies of
the weights, token auth); the replicas' placement group; Ray's errors in one line."""

from __future__ import annotations

import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group

from backend.engine.base import EngineError

PING_TIMEOUT_S = 5.0
NAMESPACE = "rl-console"
_MAX_TEMP_DIR = 40  # Ray puts AF_UNIX sockets (≤ 107 bytes) ~65 characters below its temp dir


def connect(settings: Any, *, replicas: int, cpus: float, gpus: float, model_path: str,
            cache_root: str | None) -> tuple[bool, list[str] | None]:
    """ray.init unless already connected. Returns whether this process started the cluster, and
    the GPUs a local cluster was given (None: Ray's own detection, or not started here)."""
    if ray.is_initialized():
        return False, None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline, and no reporting
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, namespace=NAMESPACE,
                                  configure_logging=False)
    address = settings.address
    if address is None:
        # a private cluster: token auth with a token made here and held only in the env
        # (Ray would otherwise write one to ~/.ray/auth_token); workers inherit it. Ray turns
        # token mode on itself for a new local cluster when RAY_AUTH_MODE is unset.
        if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        need, have = math.ceil(replicas * cpus), len(os.sched_getaffinity(0))
        if need > have:
            raise EngineError(
                f"{replicas} engine replica(s) × {cpus:g} CPU need {need} CPUs; this machine has {have}: "
                "lower engine.replicas or ray.num_cpus_per_engine"
            )
        kwargs["num_cpus"] = max(1, need)
        kwargs["num_gpus"] = None if gpus else 0
        kwargs["object_store_memory"] = object_store_bytes(model_path)
        hidden = engine_gpu_ids(settings) if gpus else None
        if cache_root:
            tmp = os.path.join(os.path.abspath(cache_root), "ray")
            if len(tmp) <= _MAX_TEMP_DIR:
                os.makedirs(tmp, exist_ok=True)
                kwargs["_temp_dir"] = tmp
    else:
        hidden = None
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        if hidden is not None:  # the raylet (and so every actor) sees only the engines' GPUs
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(hidden)
            kwargs["num_gpus"] = len(hidden)
        ray.init(address=address, **kwargs)
    except Exception as exc:
        where = f"Ray cluster at {address}" if address else "a local Ray cluster"
        raise EngineError(f"could not start or join {where}: {type(exc).__name__}: {exc}") from exc
    finally:
        if hidden is not None:  # this process (the trainer) keeps its own view
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return address is None, hidden


def engine_gpu_ids(settings: Any) -> list[str] | None:
    """The GPUs a local cluster may give engines. With 2+ on the host (counted before the
    backend pinned itself to one, see engine/gpus.py) and `separate_trainer_gpu`: all but
    the first, which the trainer uses. None = leave Ray's own detection alone."""
    from backend.engine.gpus import ALL_GPUS_ENV, all_gpu_ids

    ids = all_gpu_ids()
    if len(ids) < 2:
        return None
    if settings.separate_trainer_gpu:
        return ids[1:]
    return ids if os.environ.get(ALL_GPUS_ENV) else None


def object_store_bytes(model_path: str) -> int:
    """Room for a few copies of the weights (a push holds one while replicas load it)."""
    files = Path(model_path).glob("*.safetensors") if Path(model_path).is_dir() else []
    return int(max(256 * 2**20, 4 * sum(p.stat().st_size for p in files)))


def bundle(cpus: float, gpus: float) -> dict[str, float]:
    """One replica's resources (the ones it asks for)."""
    return {k: v for k, v in {"CPU": cpus, "GPU": gpus}.items() if v > 0}


def make_placement_group(one: dict[str, float], replicas: int, strategy: str, timeout_s: float):
    """One bundle per replica with the profile's strategy, once the cluster can place them all;
    None when a replica asks for nothing."""
    if not one:
        return None
    pg = placement_group([dict(one) for _ in range(replicas)], strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=min(120.0, timeout_s))
    except GetTimeoutError:
        remove_placement_group(pg)
        raise EngineError(
            f"the Ray cluster cannot place {replicas} replica(s) of {one} ({strategy}): "
            f"available {ray.available_resources()}, total {ray.cluster_resources()}"
        ) from None
    return pg


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def actor_reason(exc: RayActorError) -> str:
    """Ray's own words, shortened: "killed by `ray.kill`", "temporarily unavailable", ..."""
    if isinstance(exc, ActorUnavailableError):
        return "unavailable: Ray lost contact or is restarting it"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if getattr(exc, "actor_init_failed", False) and lines:  # the traceback ends with the exception
        heads = [k for k, ln in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception): ", ln)]
        tail = [ln for ln in lines[heads[-1] if heads else -1:] if not ln.startswith("For further information")]
        return f"its engine failed to start: {' '.join(tail)}"[:600]
    because = [ln for ln in lines if ln.startswith("The actor is dead because")]
    return (because[0] if because else lines[0] if lines else type(exc).__name__)[:300]
