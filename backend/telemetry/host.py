"""Host memory, read from /proc and the cgroup at each step boundary (no thread, no polling).

A run that asks for more host memory than the machine has is not told so: the kernel's OOM
killer ends the process with SIGKILL, mid-step, and nothing is written. What it takes to see it
coming is three numbers a step: what the run's processes hold at the boundary, the most the
backend held during the step (its peak, reset at every boundary through /proc/self/clear_refs),
and what the machine - or the container's memory limit, whichever is tighter - has left. From
them `NextStepNeed` estimates what the next step needs beyond what is held now; when what is
left is less than that, the next step is likely to be killed (`next_step_fits`).

Linux only; elsewhere `read()` returns None and the run goes on without it.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
#: how much more than the largest step so far the next one is allowed to need (completions grow)
MARGIN = 1.1


@dataclass(frozen=True)
class Reading:
    rss_mb: float  # the backend and its child processes (a hosted engine) now
    own_mb: float  # the backend alone now (what its peak is measured against)
    heap_free_mb: float  # of own_mb, what the allocator holds free for reuse (glibc's mallinfo2; 0 elsewhere)
    peak_mb: float | None  # the backend's peak since the last reset (None: the kernel does not say)
    available_mb: float  # what the machine, or the container's limit, has left
    total_mb: float
    limit: Literal["machine", "cgroup"]  # whichever of the two leaves less


def _kb_fields(path: Path, names: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            out[key] = float(rest.split()[0]) / 1024  # kB -> MB
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            try:
                kids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return kids


def _rss_mb(pid: int) -> float:
    try:
        return _kb_fields(PROC / str(pid) / "status", ("VmRSS",)).get("VmRSS", 0.0)
    except OSError:  # exited meanwhile
        return 0.0


def cgroup_limit(proc: Path = PROC, root: Path = CGROUP) -> tuple[float, float] | None:
    """(limit, used) MB of this process's memory cgroup when it has a limit, else None: cgroup v2
    (`0::PATH`, memory.max/current) or v1 (`N:memory:PATH`, memory.limit_in_bytes/usage_in_bytes).
    Inside a container the path named may be the host's: the mount's root is tried after it."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        num, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if num == "0" and not controllers:
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        for where in (base / rel.strip().lstrip("/"), base):
            try:
                limit = (where / files[0]).read_text().strip()
                used = float((where / files[1]).read_text())
            except (OSError, ValueError):
                continue
            if limit == "max" or float(limit) >= 2**60:  # no limit (v1 writes a huge number)
                break
            return float(limit) / 2**20, max(used - _stat(where / "memory.stat", files[2]), 0.0) / 2**20
    return None


def _stat(path: Path, key: str) -> float:
    """One field of a cgroup's memory.stat (0 where absent): the usage counts the page cache, and
    its inactive part is given back before the kernel kills anything (what `docker stats` leaves out)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return float(value)
    except (OSError, ValueError):
        pass
    return 0.0


def read(reset_peak: bool = True) -> Reading | None:
    """The host's memory now, and the backend's peak since the last call (then reset)."""
    try:
        me = _kb_fields(PROC / "self" / "status", ("VmRSS", "VmHWM"))
        info = _kb_fields(PROC / "meminfo", ("MemTotal", "MemAvailable"))
    except OSError:
        return None
    if "VmRSS" not in me or "MemTotal" not in info:
        return None
    rss = me["VmRSS"] + sum(_rss_mb(k) for k in _children(os.getpid()))
    available, total = info.get("MemAvailable", 0.0), info["MemTotal"]
    limit: Literal["machine", "cgroup"] = "machine"
    cg = cgroup_limit()
    if cg is not None and cg[0] - cg[1] < available:
        available, total, limit = max(cg[0] - cg[1], 0.0), cg[0], "cgroup"
    peak = me.get("VmHWM")
    if reset_peak:
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            (PROC / "self" / "clear_refs").write_text("5")
        except OSError:
            peak = None  # not resettable: a lifetime peak says nothing about the last step
    return Reading(rss_mb=rss, own_mb=me["VmRSS"], heap_free_mb=heap_free_mb(), peak_mb=peak, available_mb=available, total_mb=total, limit=limit)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    return fn


_MALLINFO2 = _mallinfo2()


def heap_free_mb() -> float:
    """Free memory the allocator keeps in its heaps (resident, reused by the next allocations):
    glibc's `fordblks` over all arenas; 0 where that cannot be read."""
    return _MALLINFO2().fordblks / 2**20 if _MALLINFO2 is not None else 0.0


class NextStepNeed:
    """What the next step is expected to need beyond what the backend holds at this boundary.
    A step's transient memory is its peak above what is live at its end (`peak - held + free in
    the heap`): what it allocated and freed again, whether the allocator gave it back to the
    kernel or keeps it. The next step is expected to need the most of the recent steps' transient
    memory, less what the heap holds free now (it is reused first). None until one step has been
    read. `last` is the step just ended's figure beyond what was held before it."""

    def __init__(self, window: int = 20) -> None:
        self.held: float | None = None  # the backend's own RSS at the last boundary
        self.transient: deque[float] = deque(maxlen=window)
        self.last: float | None = None
        self.first_estimate: float | None = None  # `update_estimate_mb`, set at start-up: the figure before any step

    @property
    def estimated(self) -> bool:
        """The figure comes from the start-up estimate, not from a step."""
        return not self.transient and self.first_estimate is not None

    def update(self, r: Reading) -> float | None:
        held_before, self.held = self.held, r.own_mb
        self.last = None
        if held_before is not None and r.peak_mb is not None:
            self.last = max(r.peak_mb - held_before, 0.0)
            self.transient.append(max(r.peak_mb - r.own_mb + r.heap_free_mb, 0.0))
        if not self.transient:
            return None if self.first_estimate is None else max(self.first_estimate - r.heap_free_mb, 0.0)
        return max(max(self.transient) - r.heap_free_mb, 0.0)


@dataclass(frozen=True)
class UpdateShape:
    """What sizes a float32 update's memory on CPU: the policy's shape and the step's batch."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    params: int
    sequences: int  # the step's batch: prompts_per_step × num_generations
    prompt_tokens: int  # the longest prompt (TRL pads a pass's prompts to its longest)
    completion_tokens: int  # sampling.max_tokens
    passes: int  # training.micro_batches

    def per_pass(self) -> int:
        return -(-self.sequences // self.passes)


def update_estimate_mb(u: UpdateShape) -> float:
    """What the first update is expected to take beyond what the run holds before it: the
    activations the backward keeps for one pass, the gradients, AdamW's two moments (made at
    the first optimizer step) and the completion logits. Where `NextStepNeed` has no step to go
    by yet, this is the guard's figure. Per sequence and layer it keeps ~(7·hidden +
    3·intermediate) float32 values a token, plus ~1.5 bytes per head per token² (attention
    under PyTorch's SDPA on CPU), and three float32 copies of the completion's logits.
    Measured on SmolLM2-135M (30 layers, float32, 2 cores) with one pass of one sequence: 509,
    1,444 and 3,610 MB a sequence at 520, 1,040 and 2,080 tokens; this gives 687, 1,554 and
    3,947 (it errs high)."""
    seq = u.prompt_tokens + u.completion_tokens
    per_seq = u.layers * (seq * 4 * (7 * u.hidden + 3 * u.intermediate) + 1.5 * u.heads * seq * seq)
    per_seq += 3 * 4 * u.completion_tokens * u.vocab
    return (u.per_pass() * per_seq + 4 * 4 * u.params) / 2**20  # + gradients, slack, AdamW's exp_avg and exp_avg_sq


def passes_that_fit(u: UpdateShape, available_mb: float, min_free_mb: float) -> tuple[int, float] | None:
    """The fewest update passes (a divisor of the batch, as training.micro_batches must be) whose
    estimate leaves `min_free_mb` of `available_mb`, with that estimate; None when none does."""
    from dataclasses import replace

    for k in range(1, u.sequences + 1):
        if u.sequences % k == 0:
            need = update_estimate_mb(replace(u, passes=k))
            if next_step_fits(available_mb, need, min_free_mb):
                return k, need
    return None


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def next_step_fits(available_mb: float, need_mb: float | None, min_free_mb: float) -> bool:
    """Whether a step needing `need_mb` (`NextStepNeed`; None: not known yet) would leave at least
    `min_free_mb` of what is available now, with MARGIN for longer completions."""
    return available_mb - MARGIN * (need_mb or 0.0) >= min_free_mb
