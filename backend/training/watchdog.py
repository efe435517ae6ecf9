"""Deadlines for calls made on the calling thread, without handing the call to another thread.

`with watchdog.guard(seconds, what):` costs three attribute writes. A daemon thread wakes every
quarter of the deadline (0.25-2 s) and, when a guarded call is still running past its deadline,
calls `on_expired(what, seconds_so_far)` once. It cannot stop the call (nothing can stop a
thread stuck in C code): the callback reports and ends the process. A call that returns late
is the caller's to judge.

The weight push used to run on its own thread so that a deadline could abandon it: a hand-off
and a wake-up per step, and the engine's load ran ~2 ms slower there than on the training
thread (bench/overhead.py, `engine.sync_deadline_s=0` against the default in the same turns).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class Watchdog:
    """`poll_s`: the shortest wake-up interval; each guard wakes the thread every quarter of its
    deadline, at most every `poll_s` and at least every `max_poll_s` (a 60 s deadline: every 2 s),
    so a deadline is noticed within a quarter of itself and the thread rarely takes the GIL."""

    def __init__(self, on_expired: Callable[[str, float], None], poll_s: float = 0.25, max_poll_s: float = 2.0) -> None:
        self._on_expired = on_expired
        self._min_poll_s, self._max_poll_s = poll_s, max_poll_s
        self._poll_s = poll_s
        self._armed: tuple[float, float, str] | None = None  # (start, deadline, what), monotonic
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @contextlib.contextmanager
    def guard(self, seconds: float, what: str) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="rlc-watchdog", daemon=True)
            self._thread.start()
        self._poll_s = min(max(seconds / 4, self._min_poll_s), self._max_poll_s)
        start = time.monotonic()
        self._armed = (start, start + seconds, what)
        try:
            yield
        finally:
            self._armed = None

    def stop(self) -> None:
        """End the thread (within one poll): the session that owned it is closing."""
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self._poll_s):
            armed = self._armed
            if armed is None or time.monotonic() <= armed[1]:
                continue
            if self._armed is not armed:  # it returned meanwhile: the caller judges a late return
                continue
            self._on_expired(armed[2], time.monotonic() - armed[0])
            return
