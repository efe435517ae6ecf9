"""The event bus: every fact of a run goes through here, once.

`emit_many` appends the events to the run's event log (one transaction, seq assigned) and
then hands each stored event to the listeners, in order, under one lock. Listeners are the
control server's fan-out and the headless printer; a listener that raises never stops the
run. A late joiner (a console attaching mid-run) takes a `cut()`: everything before the
cut is read from the log, everything from it arrives live, nothing twice, nothing missed.

Used by the controller, the training step loop, the control server and the benches; none
of them reaches into another's lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

Listener = Callable[[Any], None]


class LogUnwritable(RuntimeError):
    """The run's event log cannot be written: nothing may happen that the log does not
    record, so the run stops (the reason goes to run.json through `on_broken`)."""


class EventBus:
    def __init__(self, store: Any, *, on_broken: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.listeners: list[Listener] = []
        self.broken = ""  # why the log cannot be written, once it cannot
        self._on_broken = on_broken
        self._lock = threading.Lock()

    def emit(self, event: Any) -> Any:
        return self.emit_many([event])[0]

    def emit_many(self, events: list[Any]) -> list[Any]:
        """Store events (one log transaction), then deliver them to listeners in order."""
        with self._lock:
            if self.broken:
                raise LogUnwritable(self.broken)
            try:
                stored = self.store.append_many(events)
            except (sqlite3.Error, OSError) as exc:
                self.broken = f"the event log cannot be written ({type(exc).__name__}: {exc})"
                if self._on_broken is not None:
                    with contextlib.suppress(Exception):
                        self._on_broken(self.broken)
                raise LogUnwritable(self.broken) from exc
            for ev in stored:
                for listener in list(self.listeners):
                    try:
                        listener(ev)
                    except Exception:  # a broken listener never stops the run
                        traceback.print_exc()
        return stored

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self.listeners:
                self.listeners.remove(listener)

    @contextlib.contextmanager
    def cut(self) -> Iterator[int]:
        """Hold the bus still and yield the next seq: events below it are in the log, events
        from it are delivered to listeners after the `with` block (for late joiners)."""
        with self._lock:
            yield self.store.next_seq

    @property
    def last_seq(self) -> int:
        return self.store.next_seq - 1

    def read_raw(self, start: int, end: int) -> list[bytes]:
        """Encoded frames of the logged events with start <= seq < end."""
        return self.store.read_raw(start, end)
