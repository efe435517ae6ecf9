"""EventLog: every event as a one-liner, alerts highlighted; bounded by `max_lines`."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from console.state import LogEntry

LEVEL_STYLES = {
    "info": "",
    "warning": "yellow",
    "critical": "bold red",
    "alert-info": "bold cyan",
    "alert-warning": "bold black on yellow",
    "alert-critical": "bold white on red",
}


class EventLog(RichLog):
    """Passive: the screen calls `append_entries(entries, first_ts)` with what is new since last time."""

    DEFAULT_CSS = """
    EventLog {
        height: 1fr;
        border: round $primary 60%;
        border-title-color: $text;
    }
    """

    def __init__(self, *, max_lines: int = 1000, id: str | None = None) -> None:
        # wrapped at word boundaries: no line cut mid-word, and no horizontal scrollbar hiding the newest line
        super().__init__(max_lines=max_lines, wrap=True, min_width=20, markup=False, highlight=False, auto_scroll=True, id=id)
        self.next_index = 0  # index of the next state log entry to write
        self.lines_written = 0
        self.border_title = "events"

    #: most lines written per repaint tick: a screenful (at least MIN_BURST). Under a flood the
    #: older new lines would scroll past unseen within the same frame, yet each costs a render
    #: (~0.4 ms on a 2-core box: 120 lines a tick were a 46 ms stall); they are skipped, counted
    #: in one marker line, and all are in the run's event log (rl-console replay)
    MIN_BURST = 30

    @property
    def burst(self) -> int:
        return max(self.MIN_BURST, self.size.height)

    #: lines written when the view is (re)filled from the run's history (opening the screen,
    #: another filter): its recent past to scroll back through, at a one-off cost (~0.4 ms a line)
    FILL = 300

    def append_entries(self, entries: Iterable[LogEntry], first_ts: float | None, burst: int | None = None) -> None:
        entries = list(entries)
        burst = max(burst or 0, self.burst)
        if len(entries) > burst:
            keep = burst - 1  # the marker takes a line of the screenful
            skipped = len(entries) - keep
            self.write(Text(f"… {skipped} earlier events not shown here (all are in events.db — rl-console replay)", style="dim italic"))
            self.lines_written += 1
            entries = entries[-keep:]
        for entry in entries:
            offset = entry.ts - first_ts if first_ts is not None and entry.ts >= first_ts else 0.0
            m, s = divmod(int(offset), 60)
            h, m = divmod(m, 60)
            line = Text(f"{h:d}:{m:02d}:{s:02d} ", style="dim", end="")
            line.append(entry.text, style=LEVEL_STYLES.get(entry.level, ""))
            self.write(line)
            self.next_index = entry.index + 1
            self.lines_written += 1
