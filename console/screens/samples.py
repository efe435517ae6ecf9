"""Samples: every buffered group (filter, sort), its G completions, and one completion's full text."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.widgets import Input, Static

from backend.protocol.events import SampleGroup
from console.screens.base import LiveScreen
from console.screens.completion import CompletionModal
from console.state import SORT_LABELS, SORTS, RunState, is_zero_std, one_line
from console.widgets.completions_table import CompletionsTable, text_width
from console.widgets.groups_table import GroupsTable


class SamplesScreen(LiveScreen):
    SCREEN_NAME = "samples"
    AUTO_FOCUS = "GroupsTable"
    BINDINGS = [
        Binding("z", "toggle_zero_std", "zero-std", tooltip="only groups with zero reward std (no learning signal)"),
        Binding("t", "toggle_truncated", "truncated", tooltip="only groups with a truncated completion"),
        Binding("o", "cycle_sort", "sort", tooltip="sort: newest, largest |advantage|, lowest reward mean"),
        Binding("h", "prompt_history", "prompt", show=False, tooltip="the selected group's prompt on the prompts screen: its "
                "reward history and status (a zero-std group: always or never solved?)"),
        Binding("escape", "leave_filter", "groups", show=False, tooltip="leave the filter input; "
                "then clear an alert's evidence filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_text = ""
        self.zero_std = False
        self.truncated = False
        self.sort = "newest"
        self.shown_groups: list[SampleGroup] = []
        self.evidence: frozenset[tuple[int, int]] | None = None  # only an alert's evidence groups
        self.evidence_label = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="samples-filter"):
            yield Input(placeholder="/ search prompts and completions", compact=True, id="filter")
            yield Static("", id="filter-status")
        with Container(id="samples-body"):
            yield GroupsTable(id="groups")
            with Container(id="samples-detail"):
                yield Static("", id="group-detail")
                yield CompletionsTable(id="completions")

    # -- intent ---------------------------------------------------------------------------
    def focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        table = self.query_one(GroupsTable)
        if self.evidence is not None and table.has_focus:
            self.evidence = None
            self.console_app.repaint(force=True)
        table.focus()

    def show_evidence(self, label: str, pairs: list[list[int]]) -> None:
        """Only these (step, group) pairs (an alert's evidence); esc on the groups clears it."""
        self.evidence = frozenset((int(p[0]), int(p[1])) for p in pairs if len(p) >= 2)
        self.evidence_label = label
        table = self.query_one(GroupsTable)
        table.cursor_row = 0
        table.scroll_home(animate=False)
        table.focus()
        self.console_app.repaint(force=True)

    async def action_prompt_history(self) -> None:
        group = self.query_one(GroupsTable).selected_group
        if group is None:
            self.console_app.say("no group selected", "warning")
            return
        await self.console_app.open_prompt(group.prompt)

    def action_toggle_zero_std(self) -> None:
        self.zero_std = not self.zero_std
        self.console_app.repaint(force=True)

    def action_toggle_truncated(self) -> None:
        self.truncated = not self.truncated
        self.console_app.repaint(force=True)

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        table = self.query_one(GroupsTable)
        table.cursor_row = 0  # a new order starts at its top
        table.scroll_home(animate=False)
        self.console_app.repaint(force=True)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_text = event.value
            self.console_app.repaint(force=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(GroupsTable).focus()

    def on_groups_table_group_highlighted(self, message: GroupsTable.GroupHighlighted) -> None:
        self._show_group(message.group)

    def on_groups_table_group_opened(self, message: GroupsTable.GroupOpened) -> None:
        self._show_group(message.group)
        self.query_one(CompletionsTable).focus()

    def on_completions_table_opened(self, message: CompletionsTable.Opened) -> None:
        self.app.push_screen(CompletionModal(message.group, message.index))

    # -- painting -------------------------------------------------------------------------
    def _show_group(self, group: SampleGroup | None) -> None:
        state = self.console_app.state
        table = self.query_one(CompletionsTable)
        width = table.size.width or self.size.width
        table.set_group(group, state.reward_functions, text_width(width, state.reward_functions))
        detail = self.query_one("#group-detail", Static)
        if group is None:
            detail.update(Text("no group selected", style="dim"))
            return
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(f"step {group.step} group {group.group}", style="bold")
        line.append(f"  mean {group.reward_mean:.3f} std {group.reward_std:.3f}  w v{group.weight_version}  ")
        status = state.prompts.status(group.prompt)
        if status is not None and is_zero_std(group):  # no signal: the link to its prompt's learning curve
            line.append(f"prompt: {status} (h) ", style="bold yellow")
        line.append(one_line(group.prompt), style="italic")
        detail.update(line)

    #: under a flood (more than FLOOD_GROUPS new groups since the last rebuild), rebuild the
    #: table at most this often unless the view itself changed; a calm run updates every tick
    TABLE_REFRESH_S = 1.0
    FLOOD_GROUPS = 100
    _table_view: tuple = ()
    _table_at = 0.0
    _table_total = 0
    _table_pending = False

    def _deferred_refresh(self) -> None:
        if self.console_app.input_busy():  # a key is being handled and painted: it goes first
            self.set_timer(0.05, self._deferred_refresh)
            return
        self._table_pending = False
        if self.is_attached and self.is_current:  # (hidden, it is repainted when shown again)
            self.refresh_view(self.console_app.state)

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        view = (self.query_text, self.zero_std, self.truncated, self.sort, self.evidence)
        now = time.monotonic()
        flood = state.groups_total - self._table_total > self.FLOOD_GROUPS
        if view == self._table_view and flood and now - self._table_at < self.TABLE_REFRESH_S:
            if not self._table_pending:  # make sure the last burst is shown even if no event follows
                self._table_pending = True
                self.set_timer(self.TABLE_REFRESH_S - (now - self._table_at) + 0.01, self._deferred_refresh)
            return
        self._table_view, self._table_at, self._table_total = view, now, state.groups_total
        groups = state.view_groups(query=self.query_text, zero_std=self.zero_std, truncated=self.truncated, sort=self.sort,
                                   only=self.evidence)
        self.shown_groups = groups
        status = Text(no_wrap=True, end="")
        if self.evidence is not None:  # first: it decides what is listed
            held = sum(1 for g in state.groups if (g.step, g.group) in self.evidence)
            older = " (older: rl-console replay)" if held < len(self.evidence) else ""
            status.append(f" evidence {self.evidence_label}: {held}/{len(self.evidence)} held{older} (esc clears) ",
                          style="bold reverse magenta")
        status.append(f" {len(groups)}/{len(state.groups)} groups ", style="bold")
        if state.groups_total > len(state.groups):  # say plainly what a filter searches
            status.append(f"(newest {len(state.groups)} of {state.groups_total}; older: rl-console replay) ", style="dim")
        status.append("z:zero-std ", style="bold reverse yellow" if self.zero_std else "dim")
        status.append("t:truncated ", style="bold reverse yellow" if self.truncated else "dim")
        status.append(f"o:{SORT_LABELS[self.sort]}", style="bold")
        self.query_one("#filter-status", Static).update(status)
        table = self.query_one(GroupsTable)
        width = table.size.width or self.size.width
        table.set_groups(groups, max(width - 48, 16))
        self._show_group(table.selected_group)
