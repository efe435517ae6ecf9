"""Dashboard: run header, reward curve, throughput/step time, GPUs, alerts, newest groups."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container

from console.screens.base import LiveScreen
from console.state import RunState, window_span, window_start
from console.widgets.alerts_strip import AlertsStrip
from console.widgets.gpu_panel import GpuPanel
from console.widgets.groups_preview import GroupsPreview
from console.widgets.reward_chart import RewardChart
from console.widgets.startup_progress import StartupProgress
from console.widgets.throughput import ThroughputPanel


class DashboardScreen(LiveScreen):
    SCREEN_NAME = "dashboard"
    # (their hints are on the chart's border, which leaves the footer room for the screens' keys at 80 columns)
    BINDINGS = [
        Binding("f", "cycle_function", "reward fn", show=False, tooltip="cycle the reward curve: total, then each reward function"),
        Binding("z", "zoom", "zoom", show=False, tooltip="charts (here and on the metrics screen): the whole run, "
                "the last 200 steps, the last 50 steps"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.function_index = 0  # 0 = total, i = reward_functions[i - 1]

    def compose_body(self) -> ComposeResult:
        yield StartupProgress(id="startup")
        with Container(id="dash-top"):
            yield RewardChart(id="reward-chart")
            with Container(id="dash-side"):
                yield ThroughputPanel(id="throughput")
                yield GpuPanel(id="gpu")
                yield AlertsStrip(id="alerts")
        yield GroupsPreview(id="groups-preview")

    def chart_function(self, state: RunState) -> str | None:
        functions = state.reward_functions
        if self.function_index > len(functions):
            self.function_index = 0
        return functions[self.function_index - 1] if self.function_index else None

    def action_cycle_function(self) -> None:
        self.function_index = (self.function_index + 1) % (len(self.console_app.state.reward_functions) + 1)
        self.console_app.repaint(force=True)

    def action_zoom(self) -> None:
        self.console_app.cycle_chart_window()

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        startup = self.query_one(StartupProgress)
        # while starting; and, when the run ended before its first step, the reason why
        startup.display = state.state in ("unknown", "starting") or (state.state in ("failed", "crashed") and not state.steps)
        if startup.display:
            startup.show(state.progress, state.state, state.state_reason)
        function = self.chart_function(state)
        series = state.reward_series(function)
        window = self.console_app.chart_window
        first = window_start([s for s, _, _ in series], window)
        shown = series if first is None else [p for p in series if p[0] >= first]
        self.query_one(RewardChart).show(shown, state.markers, function or "total", bounds=state.reward_bounds(function),
                                         span=window_span(window, len(shown), len(state.steps), state.steps.maxlen),
                                         first_step=first)
        self.query_one(ThroughputPanel).show(state.latest_metrics)
        self.query_one(GpuPanel).show(state.gpu, state.host)
        alerts = self.query_one(AlertsStrip)
        alerts.lines = 6 if self.size.width >= 120 else 1
        active, others = state.alerts_for_display()
        alerts.show(others, active, [state.current_value(a) for a in active])
        self.query_one(GroupsPreview).show(state.newest_groups(40))
