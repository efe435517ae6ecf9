"""Events: the run's event stream as one-liners (bounded), alerts highlighted, filtered by kind.

By default the log shows what an operator acts on (commands, state changes, alerts,
checkpoints, the backend's warnings and errors), not the per-step and per-group lines that
would drown them; `k` cycles the filter (all, commands, alerts, checkpoints & syncs); `/`
searches the lines of the view (their text, any case); esc clears the search.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input

from console.screens.base import LiveScreen
from console.state import LOG_FILTERS, LogEntry, RunState
from console.widgets.event_log import EventLog


class EventsScreen(LiveScreen):
    SCREEN_NAME = "events"
    AUTO_FOCUS = "EventLog"  # not the search box: single-key commands work on opening
    BINDINGS = [
        Binding("k", "cycle_kind", "kind", tooltip="which events: operator (commands, state, alerts, "
                "checkpoints; the default), all, commands, alerts, checkpoints & syncs"),
        # (not in the footer: the search box above the log says "/ search the log")
        Binding("slash", "search", "search", show=False, tooltip="search this log's lines (any case; enter keeps it, esc clears it)"),
        Binding("escape", "leave_search", "clear search", show=False, tooltip="clear the log's search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_index = 0  # LOG_FILTERS[0]: the operator's view
        self.search = ""  # the lines shown contain this (casefolded); empty: all of the view's lines

    @property
    def filter_name(self) -> str:
        return LOG_FILTERS[self.filter_index][0]

    def shown(self, state: RunState, since: int) -> list[LogEntry]:
        """The entries of this view from `since` on: a filtered view reads its kinds' own rings,
        so it keeps the whole run's commands, alerts, state changes (within their bounds)."""
        kinds = LOG_FILTERS[self.filter_index][1]
        if self.search and kinds is None:  # all: search every kind's own ring, not only the shared (recent) one
            kinds = frozenset(state.log_by_kind)
        entries = state.log_since(since, kinds)
        if self.search:
            entries = [e for e in entries if self.search in e.text.casefold()]
        return entries

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="/ search the log", compact=True, id="log-search")
        yield EventLog(max_lines=1000, id="event-log")

    def action_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    def action_leave_search(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.value:
            box.value = ""  # (its Input.Changed rewrites the log unfiltered)
        self.query_one(EventLog).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-search":
            self.search = event.value.strip().casefold()
            self._restart_log()
            self.console_app.repaint(force=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "log-search":
            self.query_one(EventLog).focus()

    def _restart_log(self) -> None:
        log = self.query_one(EventLog)
        log.clear()
        log.next_index = 0

    def state_replaced(self) -> None:
        super().state_replaced()
        if self.is_mounted:
            self._restart_log()

    def action_cycle_kind(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(LOG_FILTERS)
        self._restart_log()  # rewritten from the run's log ring under the new filter
        self.console_app.repaint(force=True)

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        log = self.query_one(EventLog)
        filling = log.next_index == 0  # opened, or the filter changed: the view's history first
        log.append_entries(self.shown(state, log.next_index), state.first_ts, burst=log.FILL if filling else None)
        log.next_index = state.log_total  # past the entries the filter left out too
        found = f" · matching {self.search!r}" if self.search else ""
        log.border_title = f"events · {self.filter_name} (k){found} · {state.events_seen} received · {len(state.alerts)} alerts"
