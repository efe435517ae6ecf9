"""Timeline: scrub a recorded run step by step (`rl-console replay`).

While the replay loads, the timeline notes where each step ends in the run's event log (the
seq of its `StepMetrics`; after a resume, the resumed timeline's). Moving to step N rebuilds
the console's `RunState` as it was right after step N: forward by applying only the events
in between, backward by replaying from the start. Only the cut points are kept in memory;
events are read back from the log when needed. Pure Python, no Textual.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from console.state import RunState

Reader = Callable[[int, int], Iterable[Any]]  # events with from_seq <= seq < to_seq, in order


class Timeline:
    def __init__(self, read: Reader, make_state: Callable[[], RunState] = RunState) -> None:
        self.read = read
        self.make_state = make_state
        self.ends: dict[int, int] = {}  # step -> seq just after its StepMetrics
        self.last_seq = -1
        self.at: int | None = None  # the step shown; None = the whole log (where a replay opens)

    def observe(self, event: Any) -> None:
        """Called for every event as the replay loads."""
        if event.seq < 0:
            return
        self.last_seq = max(self.last_seq, event.seq)
        if event.kind == "step_metrics":
            self.ends[event.step] = event.seq + 1
        elif event.kind == "run_resumed":  # the steps after the checkpoint are run again: forget the lost ones
            for step in [s for s in self.ends if s > event.step]:
                del self.ends[step]

    @property
    def steps(self) -> list[int]:
        return sorted(self.ends)

    def position(self) -> tuple[int, int]:
        """(step shown, last step); the step is the last one while the whole log is shown."""
        steps = self.steps
        last = steps[-1] if steps else 0
        return (last if self.at is None else self.at), last

    def target(self, move: str | int) -> int | None:
        """The step a move lands on: "start", "end", or a signed number of steps."""
        steps = self.steps
        if not steps:
            return None
        if move == "start":
            return steps[0]
        if move == "end":
            return steps[-1]
        current = steps[-1] if self.at is None else self.at
        i = bisect.bisect_left(steps, current)
        return steps[max(0, min(len(steps) - 1, i + int(move)))]

    def state_at(self, step: int, current: RunState) -> tuple[RunState, bool]:
        """The state right after `step`, and whether it is a new object (rebuilt from the start)."""
        end = self.ends[step]
        shown_end = self.last_seq + 1 if self.at is None else self.ends[self.at]
        if self.at is not None and end >= shown_end:  # forward: continue the state we have
            for event in self.read(shown_end, end):
                current.apply(event)
            self.at = step
            return current, False
        state = self.make_state()
        for event in self.read(0, end):
            state.apply(event)
        self.at = step
        return state, True
