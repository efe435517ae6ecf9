"""AlertsStrip: the newest alerts, one line each, coloured by severity."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import Alert

SEVERITY_STYLES = {"critical": "bold white on red", "warning": "bold black on yellow", "info": "bold black on cyan"}


def alert_line(alert: Alert) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    line.append(f" {alert.severity.upper()} ", style=SEVERITY_STYLES.get(alert.severity, "bold"))
    line.append(f" step {alert.step} ", style="bold")
    line.append(alert.message)
    if alert.suggestion:
        line.append(f" — {alert.suggestion}", style="dim")
    return line


class AlertsStrip(Widget):
    """Passive: the screen calls `show(alerts)` with the newest alerts first."""

    DEFAULT_CSS = """
    AlertsStrip {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: auto;
        max-height: 4;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None, lines: int = 2) -> None:
        super().__init__(id=id)
        self._alerts: list[Alert] = []
        self._more = 0
        self.lines = lines
        self.border_title = "alerts"

    def show(self, alerts: Sequence[Alert]) -> None:
        alerts = list(alerts)
        self._alerts = alerts[: self.lines]
        self._more = len(alerts) - len(self._alerts)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self._alerts), 1)

    def render(self) -> Text:
        if not self._alerts:
            return Text("no alerts", style="dim green")
        lines = [alert_line(a) for a in self._alerts]
        if self._more:
            lines[0] = Text.assemble((f"+{self._more} more (l) ", "dim"), lines[0], no_wrap=True, overflow="ellipsis", end="")
        return Text("\n").join(lines)
