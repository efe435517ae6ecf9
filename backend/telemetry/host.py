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
    return Reading(rss_mb=rss, own_mb=me["VmRSS"], peak_mb=peak, available_mb=available, total_mb=total, limit=limit)


class NextStepNeed:
    """What the next step is expected to need beyond what the backend holds at this boundary,
    from the readings of the boundaries so far: the most a recent step took and gave back
    (`peak - held after it`: its activations, where the allocator returns them) plus what the
    recent steps kept growing by (`held after - held before`: longer completions, a heap that
    keeps freed memory). The first step's growth (the optimizer's state, the heap's first
    reach) does not come back and is left out. None until one step has been read."""

    def __init__(self, window: int = 20) -> None:
        self.held: float | None = None  # the backend's own RSS at the last boundary
        self.returned: deque[float] = deque(maxlen=window)
        self.growth: deque[float] = deque(maxlen=3)

    def update(self, r: Reading) -> float | None:
        held_before, self.held = self.held, r.own_mb
        if held_before is not None and r.peak_mb is not None:
            if self.returned:  # not the first step
                self.growth.append(max(r.own_mb - held_before, 0.0))
            self.returned.append(max(r.peak_mb - r.own_mb, 0.0))
        if not self.returned:
            return None
        return max(self.returned) + max(self.growth, default=0.0)


def next_step_fits(available_mb: float, need_mb: float | None, min_free_mb: float) -> bool:
    """Whether a step needing `need_mb` (`NextStepNeed`; None: not known yet) would leave at least
    `min_free_mb` of what is available now, with MARGIN for longer completions."""
    return available_mb - MARGIN * (need_mb or 0.0) >= min_free_mb
