"""AlertsModal: every alert held (`a`), newest first; Enter on one with evidence opens its
evidence groups (the [step, group] pairs the signal rules attach) on the samples screen.

Returns the chosen alert (with evidence) or None.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.protocol.events import Alert
from console.widgets.alerts_table import AlertsTable
from console.widgets.rows import group_label


def evidence_text(alert: Alert, limit: int = 12) -> str:
    pairs = [group_label(p[0], p[1]) for p in alert.evidence[:limit] if len(p) >= 2]
    more = len(alert.evidence) - limit
    return ", ".join(pairs) + (f", +{more} more" if more > 0 else "")


class AlertsModal(ModalScreen[Alert | None]):
    AUTO_FOCUS = "AlertsTable"
    BINDINGS = [
        Binding("escape", "dismiss(None)", "close", tooltip="close the alerts list"),
    ]
    DEFAULT_CSS = """
    AlertsModal { align: center middle; }
    AlertsModal > Vertical {
        width: 95%;
        height: 85%;
        border: round $accent;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    AlertsModal #alerts-table { height: 1fr; }
    AlertsModal #alert-evidence { height: auto; max-height: 3; border-top: solid $primary 50%; }
    """

    def __init__(self, alerts: list[Alert]) -> None:
        super().__init__()
        self.alerts = alerts  # newest first

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"alerts · {len(self.alerts)} held · {sum(1 for a in self.alerts if a.evidence)} with evidence"
            box.border_subtitle = "enter: open the evidence groups · esc: close"
            yield AlertsTable(id="alerts-table")
            yield Static("", id="alert-evidence")

    def on_mount(self) -> None:
        table = self.query_one(AlertsTable)
        table.set_alerts(self.alerts, max((self.app.size.width * 95 // 100) - 50, 20))
        self._describe(table.selected_alert)

    def _describe(self, alert: Alert | None) -> None:
        box = self.query_one("#alert-evidence", Static)
        if alert is None:
            box.update(Text("no alerts yet", style="dim"))
        elif alert.evidence:
            box.update(Text.assemble(("evidence: ", "bold"), evidence_text(alert)))
        else:
            box.update(Text("this alert carries no evidence groups (only the signal rules attach them)", style="dim"))

    def on_alerts_table_highlighted(self, message: AlertsTable.Highlighted) -> None:
        self._describe(message.alert)

    def on_alerts_table_opened(self, message: AlertsTable.Opened) -> None:
        if not message.alert.evidence:
            self._describe(message.alert)
            self.query_one("#alert-evidence", Static).update(
                Text(f"[{message.alert.rule}] carries no evidence groups: only the signal rules attach them", style="yellow"))
            return
        self.dismiss(message.alert)
