"""How long torch.compile has spent compiling in this process, to attribute a step's time.

A compiled update (`trl.torch_compile = true`) compiles at its first step and again for each
new input variant it meets (a batch without padding, a new group size). Such a step can take a
minute where the others take a fraction of a second; the step's report says how much of it
was compiling, so the operator reads a compile, not a hang or a slow reward function.

Timed with torch's compile callbacks (`torch._dynamo.callback`): they run when the first of
possibly nested compiles starts and when the last ends, for a frame being traced and compiled,
a backward compiled at its first use, and a CUDA graph being recorded. A torch without them
gives None, and steps then report no compile time.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_state = {"total": 0.0, "since": None, "installed": None}


def _start(_args) -> None:
    with _lock:
        _state["since"] = time.perf_counter()


def _end(_args) -> None:
    with _lock:
        if _state["since"] is not None:
            _state["total"] += time.perf_counter() - _state["since"]
            _state["since"] = None


def _install() -> bool:
    with _lock:
        if _state["installed"] is None:
            try:
                from torch._dynamo.callback import callback_handler

                callback_handler.register_start_callback(_start)
                callback_handler.register_end_callback(_end)
                _state["installed"] = True
            except Exception:  # torch without dynamo's callbacks (or they moved)
                _state["installed"] = False
        return bool(_state["installed"])


def seconds() -> float | None:
    """Seconds this process has spent compiling since the clock was installed, a compile under
    way included (None: torch does not say)."""
    if not _install():
        return None
    with _lock:
        running = time.perf_counter() - _state["since"] if _state["since"] is not None else 0.0
        return _state["total"] + running


class CompileClock:
    """Compile seconds since the last `lap()` (0.0 where torch does not say)."""

    def __init__(self) -> None:
        self._mark = seconds()

    def lap(self) -> float:
        now = seconds()
        if now is None or self._mark is None:
            self._mark = now
            return 0.0
        spent, self._mark = max(0.0, now - self._mark), now
        return spent
