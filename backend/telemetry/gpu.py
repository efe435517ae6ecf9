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


class GpuPoller:
    def __init__(self, emit: Callable[[GpuStats], None], hz: float = 2.0) -> None:
        self.emit = emit
        self.interval = 1.0 / min(max(hz, 0.1), MAX_HZ)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.node = socket.gethostname()

    def start(self) -> None:
        nvml, handles, reason = probe()
        if nvml is None:
            self.emit(GpuStats(available=False, reason=reason))
            return
        self._thread = threading.Thread(target=self._loop, args=(nvml, handles), name="rlc-gpu", daemon=True)
        self._thread.start()

    def _loop(self, nvml, handles) -> None:
        while not self._stop.is_set():
            try:
                self.emit(GpuStats(available=True, gpus=read_gpus(nvml, handles, self.node)))
            except Exception as exc:
                self.emit(GpuStats(available=False, reason=f"NVML error: {exc}"))
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
