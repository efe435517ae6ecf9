"""AlertsStrip: the active conditions first (since when, current value), then the newest other
alerts (single events, cleared conditions), one line each, coloured by severity."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import Alert

SEVERITY_STYLES = {"critical": "bold white on red", "warning": "bold black on yellow", "info": "bold black on cyan"}


#: alert metrics that are shares (0..1): their messages say them in percent, so the current value does too
SHARES = frozenset({"frac_reward_zero_std", "truncated_ratio", "unsolved_distinct_ratio", "reward_share"})


def metric_value(metric: str, value: float) -> str:
    return f"{value:.0%}" if metric in SHARES else f"{value:.3g}"


def alert_line(alert: Alert, *, active: bool = False, now: float | None = None) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    if alert.state == "cleared":
        line.append(" CLEARED ", style="bold black on green")
        line.append(f" step {alert.step} ", style="bold")
        line.append(alert.message, style="dim")
        return line
    line.append(f" {alert.severity.upper()} ", style=SEVERITY_STYLES.get(alert.severity, "bold"))
    if active:
        line.append(f" since {alert.since if alert.since is not None else alert.step}", style="bold")
        if now is not None:
            line.append(f" · now {metric_value(alert.metric, now)}", style="bold")
        line.append(" │ ", style="dim")
    else:
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
        self._lines: list[Text] = []
        self._more = 0
        self.lines = lines
        self.border_title = "alerts"

    def show(self, alerts: Sequence[Alert], active: Sequence[Alert] = (), now: Sequence[float | None] = ()) -> None:
        """`active`: conditions still holding (with their metric's current value in `now`);
        `alerts`: the other alerts, newest first."""
        now = list(now) + [None] * (len(active) - len(now))
        rows = [alert_line(a, active=True, now=v) for a, v in zip(active, now)] + [alert_line(a) for a in alerts]
        self._lines = rows[: self.lines]
        self._more = len(rows) - len(self._lines)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self._lines), 1)

    def render(self) -> Text:
        if not self._lines:
            return Text("no alerts", style="dim green")
        lines = list(self._lines)
        if self._more:
            lines[0] = Text.assemble((f"+{self._more} more (l) ", "dim"), lines[0], no_wrap=True, overflow="ellipsis", end="")
        return Text("\n").join(lines)
