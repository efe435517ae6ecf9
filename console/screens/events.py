"""Events: the run's event stream as one-liners (bounded), alerts highlighted."""

from __future__ import annotations

from textual.app import ComposeResult

from console.screens.base import LiveScreen
from console.state import RunState
from console.widgets.event_log import EventLog


class EventsScreen(LiveScreen):
    SCREEN_NAME = "events"

    def compose_body(self) -> ComposeResult:
        yield EventLog(max_lines=1000, id="event-log")

    def state_replaced(self) -> None:
        super().state_replaced()
        if self.is_mounted:
            log = self.query_one(EventLog)
            log.clear()
            log.next_index = 0

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        log = self.query_one(EventLog)
        log.append_entries(state.log_since(log.next_index), state.first_ts)
        log.border_title = f"events · {state.events_seen} received · {len(state.alerts)} alerts"
