"""Which GPUs the trainer and a local Ray cluster's engines use on a multi-GPU host.

The trainer is one process on one GPU: TRL's GRPOTrainer refuses to start when a process sees
several (it would wrap the model in nn.DataParallel). So the backend pins itself to the first
visible GPU before CUDA initialises, and remembers the whole list for the Ray cluster it may
start, which then places engine replicas on the others (`ray.separate_trainer_gpu`).
"""

from __future__ import annotations

import os

ALL_GPUS_ENV = "RLC_ALL_GPUS"  # the GPUs this backend could see before it pinned itself


def visible_gpu_ids() -> list[str]:
    """CUDA_VISIBLE_DEVICES as given, else every GPU NVML reports; without initialising CUDA
    (after cuInit a process's view can no longer change)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x.strip() for x in env.split(",") if x.strip()]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return []


def all_gpu_ids() -> list[str]:
    """Every GPU of this host that the run may use (also after pin_trainer_gpu())."""
    pinned = os.environ.get(ALL_GPUS_ENV)
    return [x for x in pinned.split(",") if x] if pinned else visible_gpu_ids()


def pin_trainer_gpu() -> tuple[str, list[str]] | None:
    """With 2+ GPUs visible: this process (the trainer, and an in-process engine) keeps the
    first; returns (trainer's, others). None when there is nothing to choose. Call before
    anything touches CUDA."""
    ids = visible_gpu_ids()
    if len(ids) < 2:
        return None
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's numbering = NVML's
    os.environ[ALL_GPUS_ENV] = ",".join(ids)
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[0]
    return ids[0], ids[1:]
