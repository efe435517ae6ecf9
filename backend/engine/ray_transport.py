"""How weights reach the Ray replicas, mixed into `RayEngine`.

- `ray.weight_transport = "object_store"`: the named tensors go into the object store once
  (`ray.put`); every replica loads them with the local engine's own path and fingerprints
  what it received.
- `"collective"`: one broadcast from the trainer (rank 0) to every replica (`collective.py`:
  NCCL between GPUs, gloo on CPUs), in buckets, straight into the replicas' memory; the group
  is formed at the first push and re-formed after a failure or a replica restart.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from backend.engine.base import EngineError, SyncReport
from backend.engine.options import EngineOptions
from backend.engine.ray_cluster import PING_TIMEOUT_S, first_line


class RayWeightPush:
    """The weight half of `RayEngine`. It uses the engine's replicas (`_actors`, `replicas`,
    `_versions`), options, deadlines (`call_timeout_s`, `_gather`, `_check`), `transport`,
    `started_cluster` and `_group`."""

    # set by RayEngine.__init__
    _actors: list[Any]
    _versions: list[int]
    _group: Any
    replicas: int
    call_timeout_s: float
    transport: str
    started_cluster: bool
    options: EngineOptions

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
        if backend == "nccl" and self.options.device != "cuda":
            raise EngineError("collective weight transport: the trainer is on a GPU but the engines are not; "
                              "set engine.device = \"cuda\" or ray.weight_transport = \"object_store\"")
        if backend == "gloo" and self.options.device == "cuda":
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
                              f"{type(exc).__name__}: {first_line(exc)}") from exc
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
