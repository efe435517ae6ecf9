"""Weight sync: fingerprint the trainer's weights and load them into a running vLLM worker.

The worker-side functions run inside vLLM's worker via `collective_rpc` (in-process for
the local engine, in the actor's process for Ray). They pick the path the installed
vLLM offers: `reload_weights(weights_iterator=...)` (vLLM ≥ 0.27; needed on CPU, where
the backend repacks linear weights after loading) or `model.load_weights(...)` (older).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any


def state_tensors(model, dtype: str | None = None) -> list[tuple[str, Any]]:
    """(name, tensor) pairs in checkpoint naming, detached, cast to `dtype` (the engine's)
    where given: the trainer keeps float32 master weights, the engine may serve bf16, and
    casting before the push halves the bytes moved and fingerprinted.

    Tied weights are sent under both names: vLLM's CPU backend keeps a separately packed
    LM head, and dropping `lm_head.weight` left it stale (caught by the log-prob canary).
    """
    items = model.state_dict().items()
    if dtype is None:
        return [(name, tensor.detach()) for name, tensor in items]
    import torch

    want = getattr(torch, dtype)
    return [(name, tensor.detach().to(want) if tensor.is_floating_point() else tensor.detach()) for name, tensor in items]


FINGERPRINT_VERSION = 2


def fingerprint(named_tensors: list[tuple[str, Any]]) -> tuple[str, int]:
    """(checksum, bytes): sha256 over each tensor's name, shape, L1 and L2 norm.

    The norms run where the tensors live, as two multi-tensor kernels per (device, dtype)
    group (`torch._foreach_norm`, accumulated in float32), and come back in one transfer: a
    few launches instead of four per tensor (SmolLM2-135M, 272 tensors, fp32 on 2 CPU cores:
    71 ms against 333 ms for per-tensor sums). A changed value changes it.
    """
    import torch

    h = hashlib.sha256()
    total = 0
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, (name, t) in enumerate(named_tensors):
        total += t.numel() * t.element_size()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        groups.setdefault((t.device, t.dtype), []).append(i)
    norms: list[tuple[float, float]] = [(0.0, 0.0)] * len(named_tensors)
    for idx in groups.values():
        flat = [named_tensors[i][1].reshape(-1) for i in idx]
        l1 = torch._foreach_norm(flat, 1, dtype=torch.float32)
        l2 = torch._foreach_norm(flat, 2, dtype=torch.float32)
        for i, pair in zip(idx, torch.stack([torch.stack(l1), torch.stack(l2)], 1).double().cpu().tolist()):
            norms[i] = (pair[0], pair[1])
    for a, b in norms:
        h.update(struct.pack("<dd", a, b))
    return h.hexdigest()[:16], total


def fingerprint_v1(named_tensors: list[tuple[str, Any]]) -> tuple[str, int]:
    """The checksum that checkpoints without a `fingerprint` version recorded: sha256 over
    each tensor's name, shape, sum and sum of squares. Kept to verify those on resume."""
    import torch

    h = hashlib.sha256()
    total = 0
    moments = []
    for name, t in named_tensors:
        total += t.numel() * t.element_size()
        flat = t.reshape(-1).float()
        moments.append(torch.stack([flat.sum(), flat.square().sum()]))
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
    if moments:
        for a, b in torch.stack(moments).double().cpu().tolist():
            h.update(struct.pack("<dd", a, b))
    return h.hexdigest()[:16], total


def available_methods(worker) -> list[str]:
    """Runs in the vLLM worker: the in-place load paths this vLLM offers, fastest-correct first."""
    runner = worker.model_runner
    out = []
    if hasattr(runner, "reload_weights"):
        out.append("reload_weights")  # handles backends that repack weights after loading (CPU)
    if hasattr(runner, "model") and hasattr(runner.model, "load_weights"):
        out.append("load_weights")  # plain per-parameter copy (CUDA; fails on vLLM-CPU in fp32)
    return out


def worker_load(worker, named_tensors, method: str = "auto") -> str:
    """Runs in the vLLM worker: load `named_tensors` in place. Returns the method used."""
    runner = worker.model_runner
    if method == "auto":
        method = available_methods(worker)[0]
    if method == "reload_weights":
        runner.reload_weights(weights_iterator=iter(named_tensors))
    elif method == "load_weights":
        runner.model.load_weights(weights=iter(named_tensors))
    else:
        raise ValueError(f"unknown weight-load method {method!r}")
    return method


def worker_load_verified(worker, named_tensors, method: str = "auto") -> tuple[str, str]:
    """Runs in the vLLM worker: fingerprint the tensors as they arrived, then load them.
    Returns (method, checksum of what the engine received)."""
    checksum, _ = fingerprint(named_tensors)
    return worker_load(worker, named_tensors, method), checksum


def worker_load_path(worker, path: str) -> str:
    """Runs in the vLLM worker: reload from a saved checkpoint directory."""
    runner = worker.model_runner
    if hasattr(runner, "reload_weights"):
        runner.reload_weights(weights_path=path)
        return "reload_weights(path)"
    from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator
    import glob

    files = sorted(glob.glob(f"{path}/*.safetensors"))
    runner.model.load_weights(weights=safetensors_weights_iterator(files, use_tqdm_on_load=False))
    return "load_weights(path)"
