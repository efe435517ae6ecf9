"""Samples: every buffered group (filter, sort), its G completions, and one completion's full text.

The console holds the newest groups (`RunState.groups`, 500); `b` pages to older groups, read
from the run's `events.db` (read-only, through the protocol's reader) when the run directory is
on this machine, 500 at a time, and `n` comes back toward the newest (the held, live list).
The status says what is listed and what a filter searches: every group of the run, the held
ones, or one older page. A run attached over the network has no local log: the status says
how many older groups there are and that `rl-console replay` on the run's machine shows them.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.widgets import Input, Static

from backend.protocol.eventlog import EventLogError, EventLogReader
from backend.protocol.events import SampleGroup
from backend.protocol.paths import db_path
from console.screens.base import LiveScreen
from console.screens.completion import CompletionModal
from console.state import SORT_LABELS, SORTS, RunState, filter_groups, is_zero_std, one_line
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
        Binding("escape", "leave_filter", "groups", show=False, tooltip="in the filter input: clear it and leave it "
                "(enter keeps it); on the groups: clear an alert's evidence filter, then the text filter"),
        Binding("b", "older", "older", show=False, tooltip="older groups: the previous 500 of the run, read from its "
                "events.db (a run on this machine)"),
        Binding("n", "newer", "newer", show=False, tooltip="newer groups: the next page, then back to the newest (live)"),
    ]
    PAGE = 500  # groups per older page

    def __init__(self) -> None:
        super().__init__()
        self.query_text = ""
        self.zero_std = False
        self.truncated = False
        self.sort = "newest"
        self.shown_groups: list[SampleGroup] = []
        self.evidence: frozenset[tuple[int, int]] | None = None  # only an alert's evidence groups
        self.evidence_label = ""
        # older pages from the run's events.db: the seq each page reads below (the newest page
        # last); empty: the held groups (live). `page` holds the shown page's groups, newest first
        self.pages: list[int] = []
        self.page: list[SampleGroup] = []
        self.page_more = False  # groups older than the shown page exist
        self.page_error = ""
        self._log: EventLogReader | None = None
        # the table's last rebuild (per screen, never shared between instances)
        self._table_view: tuple = ()
        self._table_at = 0.0
        self._table_total = 0
        self._table_pending = False

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
        """esc: in the filter input, clear the search and go back to the groups (enter keeps
        it); on the groups, drop an alert's evidence filter first, then the search."""
        table = self.query_one(GroupsTable)
        box = self.query_one("#filter", Input)
        if box.has_focus or (table.has_focus and self.evidence is None):
            box.value = ""  # (its Input.Changed clears the search and repaints)
        elif self.evidence is not None and table.has_focus:
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

    # -- older groups from the run's events.db ---------------------------------------------
    def local_log(self) -> EventLogReader | None:
        """The run's event log when its directory is on this machine (read-only), else None."""
        if self._log is None:
            run_id = self.console_app.state.run_id
            if not run_id or "://" in run_id or not db_path(run_id).is_file():
                return None
            try:
                self._log = EventLogReader(db_path(run_id))
            except EventLogError as exc:
                self.page_error = str(exc)
                return None
        return self._log

    def older_exist(self, state: RunState) -> bool:
        if self.pages:
            return self.page_more
        return state.groups_total > len(state.groups)

    def action_older(self) -> None:
        state = self.console_app.state
        if not self.older_exist(state):
            self.console_app.say("no older groups: the first of the run are listed", "information")
            return
        if self.local_log() is None:
            self.console_app.say(f"older groups are in the run's events.db, not on this machine: rl-console replay "
                                 f"{state.run_id} where the run is{f' ({self.page_error})' if self.page_error else ''}",
                                 "warning")
            return
        oldest = self.page[-1].seq if self.pages else min(g.seq for g in state.groups)
        self._load_page([*self.pages, oldest])

    def action_newer(self) -> None:
        if not self.pages:
            self.console_app.say("the newest groups are listed (live)", "information")
            return
        if len(self.pages) == 1:
            self.pages, self.page, self.page_more = [], [], False
            self._page_changed()
        else:
            self._load_page(self.pages[:-1])

    @work(thread=True, exclusive=True, group="samples-page", exit_on_error=False)
    def _load_page(self, pages: list[int]) -> None:
        """Read one page (off the UI thread: decoding 500 groups takes tens of ms)."""
        log = self.local_log()
        try:
            groups = [] if log is None else log.latest("sample_group", self.PAGE + 1, before_seq=pages[-1])
        except EventLogError as exc:
            self.app.call_from_thread(self.console_app.say, f"cannot read older groups: {exc}", "error")
            return
        self.app.call_from_thread(self._page_loaded, pages, [g for g in groups if isinstance(g, SampleGroup)])

    def _page_loaded(self, pages: list[int], groups: list[SampleGroup]) -> None:
        if not groups:
            self.console_app.say("no older groups in the run's events.db", "information")
            return
        self.pages, self.page, self.page_more = pages, groups[: self.PAGE], len(groups) > self.PAGE
        self._page_changed()

    def _page_changed(self) -> None:
        table = self.query_one(GroupsTable)
        table.cursor_row = 0
        table.scroll_home(animate=False)
        self._table_view = ()  # rebuild now
        self.console_app.repaint(force=True)

    def on_unmount(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

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

    def scope(self, state: RunState, shown: int, listed: int, filtered: bool, compact: bool = False) -> str:
        """What is listed, and so what a filter searches: every group of the run, the newest
        groups held, or one older page; and where the others are (`compact`: in fewer words)."""
        total, held = state.groups_total, len(state.groups)
        match = (f"{shown} in " if compact else f"{shown} {'match' if shown == 1 else 'matches'} in ") if filtered else ""
        if self.pages:
            first, last = (self.page[-1].step, self.page[0].step) if self.page else (0, 0)
            keys = ("b older" if self.older_exist(state) else "the run's start") + " · n newer"
            if compact:
                return f" {match}{listed} on page {len(self.pages)} (s{first}–s{last}) · {keys} "
            return f" {match}older page {len(self.pages)} ({listed} groups, steps {first}–{last}, events.db) · {keys} "
        if total <= held:
            return f" {match}all {total:,} groups "
        older = "b older" if self.local_log() is not None else "older: replay"
        if compact:
            return f" {match}newest {held:,} of {total:,} · {older} "
        return f" {match}the newest {held:,} of {total:,} groups · {older} "

    def _deferred_refresh(self) -> None:
        if self.console_app.input_busy():  # a key is being handled and painted: it goes first
            self.set_timer(0.05, self._deferred_refresh)
            return
        self._table_pending = False
        if self.is_attached and self.is_current:  # (hidden, it is repainted when shown again)
            self.refresh_view(self.console_app.state)

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        view = (self.query_text, self.zero_std, self.truncated, self.sort, self.evidence, len(self.pages))
        now = time.monotonic()
        if self.pages and view == self._table_view:  # an older page does not change with new events
            return
        flood = state.groups_total - self._table_total > self.FLOOD_GROUPS
        if view == self._table_view and flood and now - self._table_at < self.TABLE_REFRESH_S:
            if not self._table_pending:  # make sure the last burst is shown even if no event follows
                self._table_pending = True
                self.set_timer(self.TABLE_REFRESH_S - (now - self._table_at) + 0.01, self._deferred_refresh)
            return
        self._table_view, self._table_at, self._table_total = view, now, state.groups_total
        listed = self.page if self.pages else list(reversed(state.groups))
        groups = filter_groups(listed, query=self.query_text, zero_std=self.zero_std, truncated=self.truncated,
                               sort=self.sort, only=self.evidence)
        self.shown_groups = groups
        status = Text(no_wrap=True, end="")
        if self.evidence is not None:  # first: it decides what is listed
            held = sum(1 for g in listed if (g.step, g.group) in self.evidence)
            where = "b" if self.local_log() is not None else "rl-console replay"
            older = f" (older: {where})" if held < len(self.evidence) else ""
            status.append(f" evidence {self.evidence_label}: {held}/{len(self.evidence)} held{older} (esc clears) ",
                          style="bold reverse magenta")
        filtered = bool(self.query_text.strip()) or self.zero_std or self.truncated or self.evidence is not None
        flags = [("z:zero-std ", self.zero_std), ("t:truncated ", self.truncated)]  # the footer names the keys; here what is on
        room = self.size.width - 17 - len(status)  # (the filter input keeps 16 columns)
        scope = self.scope(state, len(groups), len(listed), filtered)
        tail = "".join(f for f, on in flags if on) + f"o:{SORT_LABELS[self.sort]}"
        if len(scope) + len(tail) > room:  # narrow: fewer words, and the default sort goes unsaid
            scope = self.scope(state, len(groups), len(listed), filtered, compact=True)
            flags = [("z:zero ", self.zero_std), ("t:trunc ", self.truncated)]
        status.append(scope, style="bold yellow" if self.pages else "bold")
        for flag, on in flags:
            if on:
                status.append(flag, style="bold reverse yellow")
        if self.sort != "newest" or len(scope) + len(tail) <= room:
            status.append(f"o:{SORT_LABELS[self.sort]}", style="bold")
        self.query_one("#filter-status", Static).update(status)
        table = self.query_one(GroupsTable)
        width = table.size.width or self.size.width
        table.set_groups(groups, max(width - 48, 16))
        self._show_group(table.selected_group)
