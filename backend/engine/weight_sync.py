"""Weight sync: fingerprint the trainer's weights and load them into a running vLLM worker.

The worker-side functions run inside vLLM's worker via `collective_rpc` (in-process for
the local engine, in the actor's process for Ray), and reach vLLM only through
`vllm_compat`. Paths: `reload_weights(weights_iterator=...)` (needed on CPU, where the
backend repacks linear weights after loading), `model.load_weights(...)` (vLLM's
per-parameter load), and `copy_plan` (GPU default): `load_weights` recorded once, then
replayed as a few multi-tensor copies (`CopyPlan`).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import weakref
from dataclasses import dataclass
from typing import Any

from backend.engine import vllm_compat

log = logging.getLogger("backend.engine")


def state_tensors(model, dtype: str | None = None) -> list[tuple[str, Any]]:
    """(name, tensor) pairs in checkpoint naming, detached, cast to `dtype` (the engine's)
    where given: the trainer keeps float32 master weights, the engine may serve bf16, and
    casting before the push halves the bytes moved and fingerprinted.

    Tied weights are sent under both names: vLLM's CPU backend keeps a separately packed
    LM head, and dropping `lm_head.weight` left it stale (caught by the log-prob canary).

    On a GPU the cast writes every tensor into one fresh buffer through a few `torch.cat`
    calls (batched copy kernels) and one conversion per chunk, instead of one `.to()` per
    tensor (273 launches and allocations for SmolLM2). The tensors returned are views of that
    buffer; each call makes a new one, so tensors from an earlier call keep their values.
    """
    items = list(model.state_dict(keep_vars=True).items())
    if dtype is None:
        return [(name, t.detach()) for name, t in items]
    import torch

    want = getattr(torch, dtype)
    cast = [i for i, (_, t) in enumerate(items) if t.is_floating_point() and t.dtype != want]
    out = [(name, t.detach()) for name, t in items]
    if not cast:
        return out
    if not all(items[i][1].is_cuda for i in cast) or len({items[i][1].device for i in cast}) != 1:
        # CPU: a view of a shared buffer would pickle the whole buffer (Ray object store)
        return [(name, t.to(want) if t.is_floating_point() else t) for name, t in out]
    srcs = [out[i][1] for i in cast]
    sizes = [t.numel() for t in srcs]
    flat = torch.empty(sum(sizes), dtype=want, device=srcs[0].device)
    start = pos = 0
    while start < len(srcs):  # chunks of <= CAST_CHUNK_BYTES of the source dtype: bounded scratch memory
        stop, nbytes = start, 0
        while stop < len(srcs) and (stop == start or nbytes + srcs[stop].nbytes <= CAST_CHUNK_BYTES):
            nbytes += srcs[stop].nbytes
            stop += 1
        n = sum(sizes[start:stop])
        flat[pos:pos + n].copy_(torch.cat([t.reshape(-1) for t in srcs[start:stop]]))
        start, pos = stop, pos + n
    for i, view, t in zip(cast, torch.split(flat, sizes), srcs):
        out[i] = (out[i][0], view.view(t.shape))
    return out


CAST_CHUNK_BYTES = 256 * 2**20


class PushList(list):
    """The (name, tensor) list a `Mirror` pushes: the same tensors, in the same storage, at every
    push of one mirror generation (`token`). A worker in the trainer's process receives this very
    object and may keep views of it from push to push (`CopyPlan.apply`); a new generation has a
    new token."""

    stable = True

    def __init__(self, items, token: object) -> None:
        super().__init__(items)
        self.token = token


class Mirror:
    """The policy's weights as the engine takes them, kept on the trainer's GPU between pushes.

    Built once from `state_dict(keep_vars=True)`: one flat buffer in the engine's dtype holds a
    view per floating tensor that needs the cast (tied weights share one view); tensors already
    in that dtype are pushed as they are, like `state_tensors`. Each `refresh()` is one
    multi-tensor copy (`torch._foreach_copy_`, cast included) from the live parameters into the
    views, and `fingerprint()` reuses the layout (names, shapes, byte ranges) it computed once: the
    per-tensor Python work of `state_dict()`, the cast and the fingerprint (about 9 ms over 273
    tensors for SmolLM2 on the H200 host) is paid at build time only. The checksum equals
    `fingerprint(state_tensors(model, dtype))`, bit for bit.

    The sources are checked at every refresh (their storage pointers, ~15 µs): a parameter whose
    storage was replaced rebuilds the mirror. Only for an engine that has copied the tensors when
    `push_weights` returns (the in-process engine): a later refresh overwrites them.
    """

    def __init__(self, model, dtype: str) -> None:
        import torch

        want = getattr(torch, dtype)
        items = list(model.state_dict(keep_vars=True).items())
        self.sources = [t.detach() for _, t in items]
        self._ptrs = [t.data_ptr() for _, t in items]
        self._params = [t for _, t in items]
        cast: dict[tuple[int, tuple, Any], int] = {}  # (data_ptr, shape, device) -> index of the first name
        for i, t in enumerate(self.sources):
            if t.is_floating_point() and t.dtype != want:
                cast.setdefault((t.data_ptr(), tuple(t.shape), t.device), i)
        firsts = sorted(set(cast.values()))
        sizes = [self.sources[i].numel() for i in firsts]
        devices = {self.sources[i].device for i in firsts}
        if len(devices) > 1:
            raise ValueError("the policy's tensors are on more than one device; a mirror needs one")
        device = next(iter(devices)) if devices else None
        self.buffer = torch.empty(sum(sizes), dtype=want, device=device) if firsts else None
        views = dict(zip(firsts, torch.split(self.buffer, sizes))) if firsts else {}
        named = []
        for name, t in zip((n for n, _ in items), self.sources):
            key = (t.data_ptr(), tuple(t.shape), t.device)
            if key in cast:
                named.append((name, views[cast[key]].view(t.shape)))
            else:
                named.append((name, t))
        self.dsts = [views[i].view(self.sources[i].shape) for i in firsts]
        self.srcs = [self.sources[i] for i in firsts]
        self.named = PushList(named, object())
        self.layout = _Layout(self.named)
        self.bytes = self.layout.total
        self.refresh()

    def valid(self) -> bool:
        return all(p.data_ptr() == ptr for p, ptr in zip(self._params, self._ptrs))

    def refresh(self) -> PushList:
        """Copy the live weights into the mirror (cast to the engine's dtype); the pushable list."""
        import torch

        if self.dsts:
            with torch.no_grad():
                torch._foreach_copy_(self.dsts, self.srcs)
        return self.named

    def fingerprint(self) -> tuple[str, int]:
        """`fingerprint(self.named)`, on the layout computed at build time."""
        return self.layout.digest()


FINGERPRINT_VERSION = 3
_HEADS: dict[tuple, bytes] = {}  # (names, shapes, dtypes) -> the hashed name/shape/dtype part (a run has one or two)


def fingerprint(named_tensors: list[tuple[str, Any]]) -> tuple[str, int]:
    """(checksum, bytes): sha256 over each tensor's name, shape and dtype and, per dtype, the sum
    of the tensors' bytes read as little-endian 64-bit words (each tensor zero-padded to whole
    words), wrapping at 2**64.

    Integer addition does not depend on its order, so the checksum is the same on any device,
    with any number of threads and in any process: a checkpoint written on one GPU verifies on
    another or on a CPU, and a Ray replica with its own thread count agrees with the trainer.
    (Version 2 summed float32 norms: SmolLM2's embedding gave L1 norms 5% apart on 1 and on 2
    CPU threads, so its checksum changed with the thread count.) Any single changed value changes
    the sum. Tensors adjacent in one storage (a `Mirror`'s buffer, `state_tensors`' packed cast)
    are summed as one range: one kernel per push, not one per tensor. Native-width integer sums
    also run at memory speed on a CPU, where a widening sum would not.
    """
    return _Layout(named_tensors).digest()


class _Layout:
    """What a fingerprint needs besides the values: the hashed names, shapes and dtypes, the
    64-bit word views to sum per dtype (whole-word tensors adjacent in one storage merged into
    one view), the byte count. Built per call for `fingerprint`, once for a `Mirror` (whose
    tensors keep their storage from push to push)."""

    def __init__(self, named_tensors: list[tuple[str, Any]]) -> None:
        import torch

        names = tuple(name for name, _ in named_tensors)
        tensors = [t for _, t in named_tensors]
        shapes = tuple(tuple(t.shape) for t in tensors)
        dtypes = tuple(str(t.dtype) for t in tensors)
        key = (names, shapes, dtypes)
        head = _HEADS.get(key)
        if head is None:
            head = b"".join(f"{n}{s}{d};".encode() for n, s, d in zip(names, shapes, dtypes))
            if len(_HEADS) > 8:
                _HEADS.clear()
            _HEADS[key] = head
        self.head = head
        self.total = sum(t.nbytes for t in tensors)
        runs: dict[str, list[list]] = {}  # dtype -> [[storage, device, byte start, byte end]] or [tensor to pad]
        for t in tensors:
            if t.numel() == 0:
                continue
            group = runs.setdefault(str(t.dtype), [])
            start = t.storage_offset() * t.element_size()
            if start % 8 or t.nbytes % 8 or not t.is_contiguous():  # not whole words in place (rare): padded at each digest
                group.append([t])
                continue
            storage = t.untyped_storage()
            last = group[-1] if group else None
            if last is not None and len(last) == 4 and last[1] == t.device and last[0].data_ptr() == storage.data_ptr() \
                    and last[3] == start:
                last[3] = start + t.nbytes
            else:
                group.append([storage, t.device, start, start + t.nbytes])
        self.views: dict[str, list[tuple[Any, bool]]] = {  # dtype -> [(int64 word view, or tensor to pad; padded?)]
            dtype: [(r[0], True) if len(r) == 1 else
                    (torch.empty(0, dtype=torch.int64, device=r[1]).set_(r[0], r[2] // 8, ((r[3] - r[2]) // 8,)), False)
                    for r in group]
            for dtype, group in runs.items()
        }

    def digest(self) -> tuple[str, int]:
        import torch

        h = hashlib.sha256(self.head)
        for dtype, views in self.views.items():
            sums = [(_padded_words(v) if pad else v).sum() for v, pad in views]  # int64, wrapping
            total = int(torch.stack(sums).sum()) if len({s.device for s in sums}) == 1 else sum(int(s) for s in sums)
            h.update(dtype.encode() + struct.pack("<q", (total + 2**63) % 2**64 - 2**63))
        return h.hexdigest()[:16], self.total


def _padded_words(t):
    """`t`'s bytes, zero-padded to whole 64-bit words, in a fresh (aligned) buffer."""
    import torch

    words = torch.zeros(-(-t.nbytes // 8) * 8, dtype=torch.uint8, device=t.device)
    words[:t.nbytes] = t.reshape(-1).view(torch.uint8)
    return words.view(torch.int64)


def fingerprint_v2(named_tensors: list[tuple[str, Any]]) -> tuple[str, int]:
    """The checksum of checkpoints that recorded `fingerprint: 2`: sha256 over each tensor's
    name, shape, and L1 and L2 norm accumulated in float32. Kept to verify those on resume (its
    value may differ with the thread count or device that computes it)."""
    import torch

    h = hashlib.sha256()
    total = 0
    groups: dict = {}
    for i, (name, t) in enumerate(named_tensors):
        total += t.numel() * t.element_size()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        groups.setdefault((t.device, t.dtype), []).append(i)
    norms = [(0.0, 0.0)] * len(named_tensors)
    for idx in groups.values():
        flat = [named_tensors[i][1].reshape(-1) for i in idx]
        l1 = torch._foreach_norm(flat, 1, dtype=torch.float32)
        l2 = torch._foreach_norm(flat, 2, dtype=torch.float32)
        for i, pair in zip(idx, torch.stack([torch.stack(l1), torch.stack(l2)], 1).double().cpu().tolist()):
            norms[i] = (pair[0], pair[1])
    for a, b in norms:
        h.update(struct.pack("<dd", a, b))
    return h.hexdigest()[:16], total


FINGERPRINTS = {1: "fingerprint_v1", 2: "fingerprint_v2", 3: "fingerprint"}  # the version a checkpoint recorded -> its function


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
    """Runs in the vLLM worker: the in-place load paths this vLLM offers, fastest-correct first.

    "copy_plan" where `load_weights` exists: the first push runs `load_weights` and records it
    (see `CopyPlan`); later pushes replay it as a few multi-tensor copies."""
    found = vllm_compat.load_methods(worker)
    return (["copy_plan"] if "load_weights" in found else []) + found


def worker_load(worker, named_tensors, method: str = "auto") -> str:
    """Runs in the vLLM worker: load `named_tensors` in place. Returns the method used."""
    if method == "auto":
        method = available_methods(worker)[0]
    if method == "reload_weights":
        vllm_compat.reload_weights(worker, named_tensors)
    elif method == "load_weights":
        vllm_compat.load_weights(worker, named_tensors)
    elif method == "copy_plan":
        return copy_plan_load(worker, named_tensors)
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
    if vllm_compat.has_reload_weights(worker):
        vllm_compat.reload_weights(worker, path=path)
        return "reload_weights(path)"
    import glob

    files = sorted(glob.glob(f"{path}/*.safetensors"))
    vllm_compat.load_weights(worker, vllm_compat.safetensors_iterator(files))
    return "load_weights(path)"


# ---- an engine in a process of its own (hosted.HostedEngine): the tensors by CUDA IPC ----
NOT_MAPPED = "not mapped"
_SHARED: dict[str, PushList] = {}  # in the engine's process: the mirror mapped last, by its id


def share_payload(named_tensors) -> bytes:
    """In the trainer: CUDA IPC handles of `named_tensors` (torch's own `reduce_tensor`), pickled.
    The tensors must stay alive (and keep their storage) while the other process uses them: a
    `Mirror` does, for as long as it is valid."""
    import pickle

    from torch.multiprocessing.reductions import reduce_tensor

    items = []
    for name, t in named_tensors:
        if not t.is_cuda:
            raise ValueError(f"weight {name!r} is on {t.device}: only CUDA tensors cross to the engine's process")
        items.append((name, *reduce_tensor(t.detach())))
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def worker_load_shared(worker, share_id: str, payload: bytes | None, method: str, verify: bool) -> tuple[str, str]:
    """Runs in the vLLM worker of an engine in a process of its own (`hosted.HostedEngine`'s child): map the trainer's tensors
    from `payload` (kept under `share_id` when it is set: a mirror's later pushes send the id
    only), load them in place, wait for the copies. Returns (method, checksum of what was read,
    or "" without `verify`); (NOT_MAPPED, "") when the id is unknown and no payload came."""
    import pickle

    import torch

    named = _SHARED.get(share_id) if share_id else None
    if named is None:
        if payload is None:
            return NOT_MAPPED, ""
        items = pickle.loads(payload)
        token = object()
        named = PushList([(name, rebuild(*args)) for name, rebuild, args in items], token)
        if share_id:
            _SHARED.clear()  # the previous mirror's mapping: that mirror is gone
            _SHARED[share_id] = named
        else:
            named.stable = False  # one push only: no views kept
    checksum = fingerprint(named)[0] if verify else ""
    used = worker_load(worker, named, method)
    torch.cuda.synchronize()  # the trainer may overwrite the tensors as soon as this returns
    return used, checksum


# ---- the copy plan: vLLM's per-parameter load, recorded once, replayed as fused copies ----
class PlanError(RuntimeError):
    """The load could not be recorded as plain copies (a loader transformed the data)."""


_PLANS: "weakref.WeakKeyDictionary[Any, CopyPlan | str]" = weakref.WeakKeyDictionary()


def copy_plan_load(worker, named_tensors) -> str:
    """Runs in the vLLM worker. With a plan recorded for these tensors' names, shapes and dtypes:
    replay it. Otherwise run vLLM's `load_weights` while recording it, check the recording, keep it.
    A load that cannot be recorded stays on `load_weights` (the reason is logged once)."""
    model = vllm_compat.engine_model(worker)
    plan = _PLANS.get(model)
    if isinstance(plan, CopyPlan) and plan.matches(named_tensors):
        plan.apply(named_tensors)
        return "copy_plan"
    if isinstance(plan, str) and plan == _signature(named_tensors)[1]:  # recorded before, not recordable
        vllm_compat.load_weights(worker, named_tensors)
        return "load_weights"
    try:
        plan = CopyPlan.record(model, named_tensors, lambda: vllm_compat.load_weights(worker, named_tensors))
        _PLANS[model] = plan
        return "load_weights (copy plan recorded)"
    except PlanError as exc:
        log.warning("weight sync: vLLM's load_weights could not be recorded as a copy plan, every push "
                    "uses load_weights: %s", exc)
        _PLANS[model] = _signature(named_tensors)[1]
        return "load_weights"


def plan_of(worker) -> "CopyPlan | None":
    """Runs in the vLLM worker: the recorded plan, if any (for tests and benches)."""
    plan = _PLANS.get(vllm_compat.engine_model(worker))
    return plan if isinstance(plan, CopyPlan) else None


def drop_plan(worker) -> None:
    """Runs in the vLLM worker: forget the plan (the next copy_plan push records again)."""
    _PLANS.pop(vllm_compat.engine_model(worker), None)


def _storage_key(t) -> tuple[Any, int]:
    return (t.device, t.untyped_storage().data_ptr())


def _signature(named_tensors) -> tuple[list, str]:
    sig = [(name, tuple(t.shape), t.dtype, t.device, t.is_contiguous()) for name, t in named_tensors]
    return sig, hashlib.sha256(repr(sig).encode()).hexdigest()


@dataclass
class _Entry:
    target: str  # the engine's parameter (or buffer) name, for messages
    dst: Any  # a view into the engine's parameter storage
    src_index: int  # which incoming tensor
    src_view: tuple[int, tuple[int, ...], tuple[int, ...]] | None  # (offset, size, stride) within it; None = whole


class CopyPlan:
    """vLLM's `load_weights` for one model, as recorded: which incoming tensor (or view of it)
    is copied into which view of which engine parameter.

    Recording runs the real `load_weights` under a `TorchDispatchMode` that sees every aten op:
    each `copy_` into a parameter's storage must copy a view of an incoming tensor; any other
    write to a parameter (a fill, an in-place op, a copy from a transformed tensor, a parameter
    replaced) makes the load unrecordable and it stays on `load_weights`. The recording is then
    checked parameter by parameter: replaying it into a zeroed scratch copy must reproduce what
    `load_weights` wrote, element for element. Replay groups the copies by dtype into
    `torch._foreach_copy_` calls (a few multi-tensor kernels instead of one Python weight loader
    per tensor) and synchronises the device, so a push's time includes its copies.

    Written for vLLM 0.26's dense CUDA models (Qwen2, Llama): their loaders narrow the fused
    qkv/gate_up parameters and copy. A loader that transforms data (quantised models, the CPU
    backend's repacking) is refused while recording, never replayed wrongly.
    """

    def __init__(self, sig: list, sig_hash: str, groups: list[tuple[list[Any], list[_Entry]]], params: list[tuple[Any, int]],
                 targets: int, fills: list[tuple[Any, float]] = ()) -> None:
        self.sig, self.sig_hash = sig, sig_hash
        self.groups = groups  # [(dst views, entries)], one per (dst dtype, src dtype, device)
        self.params = params  # (parameter, its data_ptr at recording): replaced storage = stale plan
        self.targets = targets
        self.copies = sum(len(e) for _, e in groups)
        self.fills = list(fills)  # (view, constant): written again each push, disjoint from every copy
        self._cached: tuple[object, list] | None = None  # (PushList token, source views per group)

    def matches(self, named_tensors) -> bool:
        if self._cached is not None and getattr(named_tensors, "token", None) is self._cached[0]:
            return all(p.data_ptr() == ptr for p, ptr in self.params)  # same tensors as the last push
        if len(named_tensors) != len(self.sig):
            return False
        for (name, t), (n, shape, dtype, device, _contiguous) in zip(named_tensors, self.sig):
            if name != n or t.dtype != dtype or t.shape != shape or t.device != device or not t.is_contiguous():
                return False
        return all(p.data_ptr() == ptr for p, ptr in self.params)

    def apply(self, named_tensors) -> None:
        import torch

        tensors = [t for _, t in named_tensors]
        with torch.no_grad():
            self._copy(tensors, getattr(named_tensors, "token", None) if getattr(named_tensors, "stable", False) else None)
        for dsts, _ in self.groups[:1]:
            if dsts and dsts[0].is_cuda:
                torch.cuda.current_stream(dsts[0].device).synchronize()

    def _copy(self, tensors, token: object = None) -> None:
        import torch

        for view, value in self.fills:
            view.fill_(value)
        if self._cached is not None and token is not None and self._cached[0] is token:
            per_group = self._cached[1]
        else:
            per_group = [[tensors[e.src_index] if e.src_view is None else
                          tensors[e.src_index].as_strided(e.src_view[1], e.src_view[2], tensors[e.src_index].storage_offset() + e.src_view[0])
                          for e in entries] for _, entries in self.groups]
            # a mirror's tensors keep their storage: their views serve every later push of it
            self._cached = (token, per_group) if token is not None else None
        for (dsts, _), srcs in zip(self.groups, per_group):
            torch._foreach_copy_(dsts, srcs)

    @classmethod
    def record(cls, model, named_tensors, load) -> "CopyPlan":
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        sig, sig_hash = _signature(named_tensors)
        if not all(c for *_, c in sig):
            raise PlanError("an incoming tensor is not contiguous")
        targets: dict[tuple[Any, int], tuple[str, Any]] = {}
        params = []
        for name, p in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
            key = _storage_key(p)
            targets.setdefault(key, (name, p.data))
            params.append((p, p.data_ptr()))
        sources: dict[tuple[Any, int], list[tuple[int, int, int]]] = {}
        for j, (_, t) in enumerate(named_tensors):
            sources.setdefault(_storage_key(t), []).append((t.storage_offset(), t.numel(), j))
        recorded: list[tuple[tuple[Any, int], _Entry]] = []
        problems: list[str] = []
        fills: list[tuple[tuple[Any, int], Any, float, str]] = []  # constant writes (vLLM zeroes vocab padding)
        copy_op = torch.ops.aten.copy_.default
        fill_ops = {torch.ops.aten.fill_.Scalar: lambda a: a[1], torch.ops.aten.zero_.default: lambda a: 0}

        def written(func, args, kwargs):
            for i, a in enumerate(func._schema.arguments):
                if a.alias_info is not None and a.alias_info.is_write:
                    val = args[i] if i < len(args) else kwargs.get(a.name)
                    for t in val if isinstance(val, (list, tuple)) else (val,):
                        if isinstance(t, torch.Tensor):
                            yield t

        def source_of(src) -> tuple[int, tuple | None] | None:
            for off, numel, j in sources.get(_storage_key(src), ()):
                start = src.storage_offset()
                last = start + sum((s - 1) * st for s, st in zip(src.shape, src.stride())) if src.numel() else start
                if off <= start and last < off + numel and min(src.stride(), default=1) >= 0:
                    whole = (start == off and src.shape == named_tensors[j][1].shape and src.is_contiguous())
                    if src.dtype != named_tensors[j][1].dtype:
                        return None
                    return j, None if whole else (start - off, tuple(src.shape), tuple(src.stride()))
            return None

        class Recorder(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                for t in written(func, args, kwargs):
                    key = _storage_key(t)
                    if key not in targets:
                        continue
                    name = targets[key][0]
                    if func in fill_ops and t.dtype == targets[key][1].dtype:
                        if t.numel():
                            fills.append((key, t, fill_ops[func](args), name))
                        continue
                    if func is not copy_op:
                        problems.append(f"{func} writes {name}")
                        continue
                    found = source_of(args[1]) if isinstance(args[1], torch.Tensor) else None
                    if found is None:
                        problems.append(f"{name} is written from a tensor that is not an incoming one (the loader transformed it)")
                    elif t.dtype != targets[key][1].dtype:
                        problems.append(f"{name} is written through a view of another dtype")
                    else:
                        recorded.append((key, _Entry(name, t, found[0], found[1])))
                return func(*args, **kwargs)

        with torch.no_grad(), Recorder():
            load()
        if problems:
            raise PlanError("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
        if any(p.data_ptr() != ptr for p, ptr in params):
            raise PlanError("load_weights replaced a parameter's storage")
        if not recorded:
            raise PlanError("load_weights copied nothing into the model's parameters")
        entries = _last_writes(recorded, fills)
        fills = [(f[1].as_strided(f[1].shape, f[1].stride(), f[1].storage_offset()), f[2]) for f in fills]
        cls._check(entries, fills, named_tensors, targets)
        groups: dict[tuple, list[_Entry]] = {}
        for _key, e in entries:
            groups.setdefault((e.dst.dtype, named_tensors[e.src_index][1].dtype, e.dst.device), []).append(e)
        # each dst is a fresh view of the parameter storage, made once (as_strided at the recorded place)
        fixed = []
        for es in groups.values():
            for e in es:
                e.dst = e.dst.as_strided(e.dst.shape, e.dst.stride(), e.dst.storage_offset())
            fixed.append(([e.dst for e in es], es))
        return cls(sig, sig_hash, fixed, params, len({k for k, _ in entries}), fills)

    @staticmethod
    def _check(entries, fills, named_tensors, targets) -> None:
        """Replay into a zeroed scratch copy of each written parameter storage: it must equal
        what load_weights left there, element for element."""
        import torch

        by_storage: dict[tuple[Any, int], list[_Entry]] = {}
        for key, e in entries:
            by_storage.setdefault(key, []).append(e)
        fills_at: dict[tuple[Any, int], list[tuple[Any, float]]] = {}
        for view, value in fills:
            fills_at.setdefault(_storage_key(view), []).append((view, value))
        tensors = [t for _, t in named_tensors]
        for key, es in by_storage.items():
            name, base = targets[key]
            n = base.untyped_storage().nbytes() // base.element_size()
            scratch = torch.zeros(n, dtype=base.dtype, device=base.device)
            for view, value in fills_at.get(key, ()):
                scratch.as_strided(view.shape, view.stride(), view.storage_offset()).fill_(value)
            for e in es:
                src = tensors[e.src_index]
                if e.src_view is not None:
                    off, size, stride = e.src_view
                    src = src.as_strided(size, stride, src.storage_offset() + off)
                scratch.as_strided(e.dst.shape, e.dst.stride(), e.dst.storage_offset()).copy_(src)
            mine = scratch.as_strided(base.shape, base.stride(), base.storage_offset())
            if not torch.equal(mine, base):
                raise PlanError(f"replaying the recorded copies does not reproduce {name} as load_weights wrote it")


def _last_writes(recorded, fills=()):
    """Keep the last copy into each exact region (sequential semantics); refuse partial overlaps
    (and copies over a constant fill), whose order a fused copy would not keep."""
    last: dict[tuple, int] = {}
    for i, (key, e) in enumerate(recorded):
        last[(key, e.dst.storage_offset(), tuple(e.dst.shape), tuple(e.dst.stride()))] = i
    kept = [recorded[i] for i in sorted(last.values())]
    spans: dict[tuple, list[tuple[int, int, str]]] = {}
    for key, e in kept:
        start = e.dst.storage_offset()
        end = start + sum((s - 1) * st for s, st in zip(e.dst.shape, e.dst.stride())) if e.dst.numel() else start
        spans.setdefault(key, []).append((start, end, e.target))
    for key, view, _, name in fills:
        start = view.storage_offset()
        spans.setdefault(key, []).append((start, start + sum((s - 1) * st for s, st in zip(view.shape, view.stride())), name))
    for s in spans.values():
        s.sort()
        for (_a0, a1, name), (b0, _b1, _) in zip(s, s[1:]):
            if b0 <= a1:
                raise PlanError(f"two loads write overlapping parts of {name}")
    return kept
