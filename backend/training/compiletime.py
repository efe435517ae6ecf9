"""How long torch.compile has spent compiling in this process, to attribute a step's time.

A compiled update (`trl.torch_compile = true`) compiles at its first step and again for each
new input variant it meets (a batch without padding, a new group size). Such a step can take a
minute where the others take a fraction of a second; the step's report says how much of it
was compiling, so the operator reads a compile, not a hang or a slow reward function.

Reads `torch._dynamo.utils.compilation_time_metrics` (torch's own record, private): the seconds
of every frame compile ("_compile.compile_inner"; the backward is compiled inside it unless
torch defers it to the first backward, which this does not count). A torch without that
record gives None, and steps then report no compile time.
"""

from __future__ import annotations

FRAME_COMPILE = "_compile.compile_inner"


def seconds() -> float | None:
    """Seconds this process has spent compiling frames so far (None: not known here)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except Exception:  # torch without dynamo, or the record moved
        return None
    try:
        return float(sum(compilation_time_metrics.get(FRAME_COMPILE, ())))
    except (TypeError, ValueError, AttributeError):
        return None


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
