"""Help: every key binding, app-wide and per screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.screens.base import LiveScreen
from console.state import RunState


def _key(binding: Binding) -> str:
    names = {"slash": "/", "question_mark": "?", "exclamation_mark": "!", "escape": "esc", "enter": "enter", "ctrl+p": "ctrl+p",
             "left_square_bracket": "[", "right_square_bracket": "]", "left_curly_bracket": "{",
             "right_curly_bracket": "}", "less_than_sign": "<", "greater_than_sign": ">"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in binding.key.split(","))


def bindings_table(sections: list[tuple[str, list[Binding]]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2), expand=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for title, bindings in sections:
        table.add_row(Text(title, style="bold underline"), "")
        for b in bindings:
            table.add_row(_key(b), b.tooltip or b.description)
        table.add_row("", "")
    return table


class HelpScreen(LiveScreen):
    SCREEN_NAME = "help"
    BINDINGS = [Binding("escape", "back", "back", tooltip="back to the previous screen")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(id="help-text")

    def on_mount(self) -> None:
        from console.app import RLConsoleApp
        from console.screens.completion import CompletionModal
        from console.screens.dashboard import DashboardScreen
        from console.screens.events import EventsScreen
        from console.screens.params import ParamsScreen
        from console.screens.playground import PlaygroundScreen
        from console.screens.alerts import AlertsModal
        from console.screens.metrics import MetricsScreen
        from console.screens.probes import ProbesScreen
        from console.screens.prompts import RULES, PromptsScreen
        from console.screens.samples import SamplesScreen
        from console.screens.stop import StopModal

        app_bindings = [b for b in RLConsoleApp.BINDINGS if isinstance(b, Binding)]
        app_bindings.append(Binding("ctrl+p", "command_palette", "command palette (every action by name)"))
        sections = [
            ("everywhere", app_bindings),
            ("dashboard", list(DashboardScreen.BINDINGS)),
            ("samples", list(SamplesScreen.BINDINGS)
             + [Binding("enter", "", "on a group: its completions; on a completion: full text")]),
            ("events log", list(EventsScreen.BINDINGS)),
            ("stop dialog", list(StopModal.BINDINGS)),
            ("parameters", list(ParamsScreen.BINDINGS)
             + [Binding("enter", "", "in a field: validate and send every filled field")]),
            ("policy diff", list(ProbesScreen.BINDINGS)
             + [Binding("enter", "", "on a version: compare with it")]),
            ("playground", list(PlaygroundScreen.BINDINGS)
             + [Binding("enter", "", "in a field: send; on a try: its prompt back in the form")]),
            ("metrics", list(MetricsScreen.BINDINGS)),
            ("prompts", list(PromptsScreen.BINDINGS)
             + [Binding("enter", "", "on a prompt: its groups over time; on a group: its completions")]
             + [Binding("", "", rule) for rule in RULES.split(" · ")]),
            ("alerts", list(AlertsModal.BINDINGS) + [Binding("enter", "", "on a signal alert: its evidence groups "
                                                             "on the samples screen")]),
            ("completion text", [b for b in CompletionModal.BINDINGS if b.key != "enter"]),
            ("help", list(self.BINDINGS)),
        ]
        self.query_one("#help-text", Static).update(bindings_table(sections))

    def action_back(self) -> None:
        self.console_app.action_back()

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
