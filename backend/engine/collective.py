"""Weights over a collective group: the trainer is rank 0, engine replica i is rank i + 1.

Used by `RayEngine` when `ray.weight_transport = "collective"`: the trainer broadcasts its
weights once, packed into a few flat buckets, and every replica receives them straight into
its own device memory (no object store, no host copy on GPUs).

- GPUs: NCCL through vLLM's `PyNcclCommunicator` over a `StatelessProcessGroup` (internals: the
  `vllm_compat` shims `nccl_communicator`, `stateless_group`) — the primitive
  TRL's vLLM client and vLLM's own NCCL weight-transfer engine are built on. It forms its own
  group, so it never touches torch.distributed's global state (TRL/accelerate own that).
- CPUs: gloo (torch's `ProcessGroupGloo` over a `TCPStore`): the same packing, ordering and
  verification run on any machine, which is how CI tests this path.

Every receiver fingerprints what arrived and refuses a mismatch (`weight_sync.fingerprint`),
so a transport fault cannot pass as a sync.
"""

from __future__ import annotations

import datetime as _dt
import socket
import time
from dataclasses import dataclass, field
from typing import Any

BUCKET_BYTES = 512 * 2**20  # one broadcast per bucket: few calls, bounded extra memory

# NVLink multicast (NVLS) off in every process that may run NCCL: on shared multi-GPU hosts a
# program that uses it can take the host's GPUs out of service. Set before NCCL initialises.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def no_multicast_env() -> dict[str, str]:
    """Set NO_MULTICAST in this process (unless the operator set them) and return them, for
    processes started elsewhere (Ray actors on other nodes get them through runtime_env)."""
    import os

    for k, v in NO_MULTICAST.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in NO_MULTICAST}


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple[int, ...]
    offset: int  # in elements, inside the bucket
    numel: int


@dataclass(frozen=True)
class Bucket:
    dtype: str  # torch dtype name, e.g. "bfloat16"
    numel: int
    slots: tuple[Slot, ...] = field(default_factory=tuple)


def plan_buckets(named_tensors: list[tuple[str, Any]], bucket_bytes: int = BUCKET_BYTES) -> list[Bucket]:
    """Group tensors by dtype, in order, into buckets of at most `bucket_bytes` (a larger
    tensor gets a bucket of its own). Only names, shapes and offsets travel as metadata."""
    buckets: list[Bucket] = []
    open_: dict[str, tuple[list[Slot], int]] = {}
    for name, t in named_tensors:
        dtype = str(t.dtype).removeprefix("torch.")
        slots, used = open_.get(dtype, ([], 0))
        n = t.numel()
        if slots and (used + n) * t.element_size() > bucket_bytes:
            buckets.append(Bucket(dtype, used, tuple(slots)))
            slots, used = [], 0
        slots.append(Slot(name, tuple(t.shape), used, n))
        open_[dtype] = (slots, used + n)
    for dtype, (slots, used) in open_.items():
        if slots:
            buckets.append(Bucket(dtype, used, tuple(slots)))
    return buckets


def pack(bucket: Bucket, by_name: dict[str, Any]):
    """One flat tensor holding the bucket's tensors back to back (on their device)."""
    import torch

    return torch.cat([by_name[s.name].reshape(-1) for s in bucket.slots])


def unpack(bucket: Bucket, flat) -> list[tuple[str, Any]]:
    """(name, view) pairs into a received flat bucket: no copies."""
    return [(s.name, flat[s.offset : s.offset + s.numel].view(s.shape)) for s in bucket.slots]


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WeightGroup:
    """One member of the trainer→engines group. `backend` is "nccl" (device: a CUDA device)
    or "gloo" (CPU). Rank 0 hosts the rendezvous store; every member must construct its
    WeightGroup concurrently (the constructor returns once all `world_size` have joined)."""

    def __init__(self, backend: str, host: str, port: int, rank: int, world_size: int, *,
                 device: Any = None, timeout_s: float = 300.0) -> None:
        import torch

        self.backend, self.rank, self.world_size = backend, rank, world_size
        self.timeout_s = timeout_s
        if backend == "nccl":
            from backend.engine import vllm_compat

            self.device = torch.device(device if device is not None else f"cuda:{torch.cuda.current_device()}")
            self._comm = vllm_compat.nccl_group(host, port, rank, world_size, self.device, timeout_s)
            self._stream = torch.cuda.Stream(device=self.device)  # a hung peer cannot block the trainer's stream
        elif backend == "gloo":
            import torch.distributed as dist

            self.device = torch.device("cpu")
            timeout = _dt.timedelta(seconds=timeout_s)
            store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timeout)
            self._store = store
            self._pg = dist.ProcessGroupGloo(dist.PrefixStore("rlc-weights", store), rank, world_size, timeout)
        else:
            raise ValueError(f"unknown collective backend {backend!r} (nccl or gloo)")

    def broadcast(self, tensor) -> None:
        """From rank 0 to everyone, in place. NCCL: queued on the group's own stream (call
        `wait()`); gloo: returns when done."""
        if self.backend == "nccl":
            import torch

            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the packed bucket is ready
            tensor.record_stream(self._stream)
            self._comm.broadcast(tensor, src=0, stream=self._stream)
        else:
            import torch.distributed as dist

            opts = dist.BroadcastOptions()
            opts.rootRank, opts.rootTensor = 0, 0
            self._pg.broadcast([tensor], opts).wait()

    def wait(self, deadline: float | None = None) -> None:
        """Until every queued broadcast finished (NCCL), or raise TimeoutError at `deadline`
        (time.monotonic()) — a peer that died mid-transfer must not hang the run."""
        if self.backend != "nccl":
            return
        while not self._stream.query():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("NCCL broadcast did not finish: a peer stopped receiving")
            time.sleep(0.0005)

    def close(self) -> None:
        self._comm = self._pg = self._store = None  # type: ignore[assignment]
