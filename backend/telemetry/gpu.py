"""NVML GPU stats, polled in-process at ≤ 4 Hz (never by spawning nvidia-smi).

NVML calls are cheap but serialize on driver locks, so one background thread polls and
the training loop never waits on it. On a machine without an NVIDIA GPU the poller
reports that once (`GpuStats(available=False, reason=...)`) and stops.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from backend.protocol.events import GpuInfo, GpuStats

MAX_HZ = 4.0


def read_gpus(nvml, handles, node: str) -> list[GpuInfo]:
    out = []
    for i, h in enumerate(handles):
        util = nvml.nvmlDeviceGetUtilizationRates(h)
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        try:
            power = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        except nvml.NVMLError:
            power = None
        try:
            temp = float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError:
            temp = None
        name = nvml.nvmlDeviceGetName(h)
        out.append(
            GpuInfo(
                index=i,
                name=name.decode() if isinstance(name, bytes) else str(name),
                util_pct=float(util.gpu),
                mem_used_mb=mem.used / 2**20,
                mem_total_mb=mem.total / 2**20,
                power_w=power,
                temperature_c=temp,
                node=node,
            )
        )
    return out


def probe() -> tuple[object | None, list, str]:
    """(nvml module, handles, reason-if-none)."""
    try:
        import pynvml as nvml
    except ImportError:
        return None, [], "nvidia-ml-py is not installed"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, [], f"no NVIDIA GPU ({type(exc).__name__})"
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        return None, [], "NVML found no GPU"
    return nvml, [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)], ""


def merge_node_stats(local: list[GpuInfo], node_stats: list[dict]) -> list[GpuInfo]:
    """Local GPUs plus those reported by engine replicas on other nodes (Ray actors'
    `node_stats()`), one entry per physical GPU: NVML in every actor on a host sees all of
    that host's GPUs, so entries are keyed by (host, index)."""
    seen = {(g.node, g.index) for g in local}
    out = list(local)
    for st in node_stats:
        for raw in st.get("gpus") or []:
            g = GpuInfo.model_validate({**raw, "node": st.get("hostname", raw.get("node", "?"))})
            if (g.node, g.index) not in seen:
                seen.add((g.node, g.index))
                out.append(g)
    return out


class GpuPoller:
    """Polls local NVML and, for Ray engines, the replicas' nodes (`remote()` -> node_stats)."""

    def __init__(self, emit: Callable[[GpuStats], None], hz: float = 2.0, remote: Callable[[], list[dict]] | None = None) -> None:
        self.emit = emit
        self.remote = remote
        self.interval = 1.0 / min(max(hz, 0.1), MAX_HZ)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.node = socket.gethostname()

    def start(self) -> None:
        nvml, handles, reason = probe()
        if nvml is None and self.remote is None:
            self.emit(GpuStats(available=False, reason=reason))
            return
        self._thread = threading.Thread(target=self._loop, args=(nvml, handles, reason), name="rlc-gpu", daemon=True)
        self._thread.start()

    def _remote_stats(self) -> list[dict]:
        try:
            return self.remote() if self.remote else []
        except Exception:  # a replica being restarted: its node is skipped this time
            return []

    def _loop(self, nvml, handles, reason: str) -> None:
        while not self._stop.is_set():
            try:
                local = read_gpus(nvml, handles, self.node) if nvml is not None else []
            except Exception as exc:
                self.emit(GpuStats(available=False, reason=f"NVML error: {exc}"))
                return
            gpus = merge_node_stats(local, self._remote_stats())
            if not gpus:  # no GPU on this node nor on the engines' nodes: say so once and stop
                self.emit(GpuStats(available=False, reason=f"{reason}; the engine replicas report none either"))
                return
            try:
                self.emit(GpuStats(available=True, gpus=gpus))
            except Exception:  # the run's log is gone (the run is ending): stop polling quietly
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
