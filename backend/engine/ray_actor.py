"""`EngineActor`: one replica of the Ray engine, a `LocalVLLMEngine` in a Ray actor's process
(one code path for both backends). The driver side is `ray_engine.RayEngine`.

Rollout and weight calls run one at a time; `ping`, `weight_version` and `node_stats` answer
from a second concurrency group, even mid-rollout. With the collective transport the replica
joins the trainer's broadcast group (`join_weight_group`) and receives each push into its own
memory (`receive_weights`) before loading it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import ray

from backend.engine.base import EngineError, GeneratedCompletion, Sampling, SyncReport
from backend.engine.options import EngineOptions


@ray.remote(concurrency_groups={"control": 2})
class EngineActor:
    """One replica: a `LocalVLLMEngine` in the actor's process. Rollout and weight calls run
    one at a time (default group); `ping`/`health`/`node_stats` answer even mid-rollout."""

    def __init__(self, model_path: str, options: EngineOptions, replica: int) -> None:
        from backend.engine.local import LocalVLLMEngine

        self.replica = replica
        self.incarnation = uuid.uuid4().hex  # a Ray restart re-runs __init__: the driver sees a new one
        # prepare_env() runs before vllm imports; weights arrive through the object store or a
        # broadcast, so each replica fingerprints what it received and refuses a mismatch
        self.engine = LocalVLLMEngine(model_path, options.model_copy(update={"verify_received": True}))
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
