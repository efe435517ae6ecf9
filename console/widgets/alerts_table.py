"""AlertsTable: every alert held, newest first, with how many evidence groups it carries.

A LineTable (see line_table.py); Enter (or a click on the cursor row) announces `Opened`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from textual.message import Message

from backend.protocol.events import Alert
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, DIM, Cell

SEVERITY = {"critical": Style.parse("bold white on red"), "warning": Style.parse("bold black on yellow"),
            "info": Style.parse("bold black on cyan")}
COLUMNS = ("step", "severity", "rule", "evidence", "message")


class AlertsTable(LineTable):
    """Passive: the screen calls `set_alerts(alerts, message_width)` (newest first)."""

    class Highlighted(Message):
        def __init__(self, alert: Alert) -> None:
            super().__init__()
            self.alert = alert

    class Opened(Message):
        """Enter on an alert: the user wants its evidence groups."""

        def __init__(self, alert: Alert) -> None:
            super().__init__()
            self.alert = alert

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[Alert] = []

    @property
    def selected_alert(self) -> Alert | None:
        return self._rows[self.cursor_row] if 0 <= self.cursor_row < len(self._rows) else None

    def set_alerts(self, alerts: Sequence[Alert], message_width: int) -> None:
        self._rows = list(alerts)
        steps = max((a.step for a in self._rows), default=0)
        rules = max((len(a.rule) for a in self._rows), default=4)
        widths = (max(4, len(str(steps))), 8, min(max(rules, 4), 22), 8, max(message_width, 10))
        self.set_shape(len(self._rows), COLUMNS, widths, (0, 3))

    def row_cells(self, row: int) -> list[Cell]:
        a = self._rows[row]
        cleared = a.state == "cleared"
        return [
            Cell(str(a.step), right=True),
            Cell("cleared" if cleared else a.severity, DIM if cleared else SEVERITY.get(a.severity)),
            Cell(a.rule, BOLD),
            Cell(f"{len(a.evidence)} grp" if a.evidence else "–", None if a.evidence else DIM, right=True),
            Cell(a.message + (f" — {a.suggestion}" if a.suggestion else ""), DIM if cleared else None),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.Highlighted(self._rows[row]))

    def opened(self, row: int) -> None:
        self.post_message(self.Opened(self._rows[row]))
