"""Prompts: per-prompt learning curves (`r`).

Every prompt the run sampled (identified by its text), with its status judged on the run's
reward range (the declared bounds, else the rewards seen; rules in console/prompt_curves.py and
the help screen): always solved and never solved (no learning signal), learning, regressed,
mixed. `f` filters by status. The selected prompt's groups (those still held: the newest 500 of
the run) are listed below with their completions, as on the samples screen; Enter on a
completion opens its full text.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.widgets import Static

from backend.protocol.events import SampleGroup
from console.prompt_curves import EDGE, FILTERS, MOVE, STATUSES
from console.screens.base import LiveScreen
from console.screens.completion import CompletionModal
from console.state import RunState, one_line
from console.widgets.completions_table import CompletionsTable, text_width
from console.widgets.groups_table import GroupsTable
from console.widgets.prompt_curves_table import STATUS_STYLES, PromptCurvesTable, curve, prompt_width

RULES = (
    f"always solved: every group std 0, mean within {EDGE:.0%} of the top of the reward range (declared, else seen) · "
    f"never solved: every group std 0, mean within {EDGE:.0%} of the lowest · "
    f"regressed: newest mean ≥ {MOVE:.0%} of the range below its best earlier mean · "
    f"learning: newest mean ≥ {MOVE:.0%} of the range above its first · mixed: the rest"
)


def prompt_groups(state: RunState, prompt: str) -> list[SampleGroup]:
    """The prompt's groups still held, newest first."""
    return [g for g in reversed(state.groups) if g.prompt == prompt]


class PromptsScreen(LiveScreen):
    SCREEN_NAME = "prompts"
    AUTO_FOCUS = "PromptCurvesTable"
    BINDINGS = [
        Binding("f", "cycle_filter", "status", tooltip="which prompts: all, no signal (always + never solved), "
                "always solved, never solved, learning, regressed, mixed"),
        Binding("escape", "back_to_prompts", "prompts", show=False, tooltip="back to the prompt list"),
    ]
    DEFAULT_CSS = """
    PromptsScreen #prompts-title { height: 1; background: $boost; padding: 0 1; }
    PromptsScreen #prompts-body { height: 1fr; layout: vertical; }
    PromptsScreen #prompt-table { height: 1fr; min-height: 3; }
    PromptsScreen #prompt-detail { height: 2fr; border-top: solid $primary 50%; }
    PromptsScreen #prompt-curve { height: 2; background: $boost; }
    PromptsScreen #prompt-groups { height: 1fr; min-height: 3; }
    PromptsScreen #prompt-completions { height: 1fr; min-height: 3; }
    PromptsScreen.-wide #prompts-body { layout: horizontal; }
    PromptsScreen.-wide #prompt-table { width: 1fr; height: 100%; }
    PromptsScreen.-wide #prompt-detail { width: 1fr; height: 100%; border-top: none; border-left: solid $primary 50%; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.filter_index = 0  # FILTERS[0]: all
        self.prompt: str | None = None  # the selected prompt
        self._select: str | None = None  # a prompt to move the cursor to on the next paint

    @property
    def filter_name(self) -> str:
        return FILTERS[self.filter_index][0]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="prompts-title")
        with Container(id="prompts-body"):
            yield PromptCurvesTable(id="prompt-table")
            with Vertical(id="prompt-detail"):
                yield Static("", id="prompt-curve")
                yield GroupsTable(id="prompt-groups")
                yield CompletionsTable(id="prompt-completions")

    # -- intent ---------------------------------------------------------------------------
    def show_prompt(self, prompt: str) -> None:
        """Select `prompt` (from the samples screen): the filter opens up if it hides it."""
        state = self.console_app.state
        status = state.prompts.status(prompt)
        statuses = FILTERS[self.filter_index][1]
        if statuses is not None and status not in statuses:
            self.filter_index = 0
        self.prompt = self._select = prompt
        self.console_app.repaint(force=True)
        self.query_one("#prompt-groups", GroupsTable).focus()

    def action_cycle_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(FILTERS)
        table = self.query_one(PromptCurvesTable)
        table.cursor_row = 0
        table.scroll_home(animate=False)
        self.prompt = None
        self.console_app.repaint(force=True)

    def action_back_to_prompts(self) -> None:
        self.query_one(PromptCurvesTable).focus()

    def on_prompt_curves_table_highlighted(self, message: PromptCurvesTable.Highlighted) -> None:
        self.prompt = message.prompt
        self._show_prompt(self.console_app.state)

    def on_prompt_curves_table_opened(self, message: PromptCurvesTable.Opened) -> None:
        self.prompt = message.prompt
        self._show_prompt(self.console_app.state)
        self.query_one("#prompt-groups", GroupsTable).focus()

    def on_groups_table_group_highlighted(self, message: GroupsTable.GroupHighlighted) -> None:
        self._show_group(message.group)

    def on_groups_table_group_opened(self, message: GroupsTable.GroupOpened) -> None:
        self._show_group(message.group)
        self.query_one("#prompt-completions", CompletionsTable).focus()

    def on_completions_table_opened(self, message: CompletionsTable.Opened) -> None:
        self.app.push_screen(CompletionModal(message.group, message.index))

    # -- painting -------------------------------------------------------------------------
    def _show_group(self, group: SampleGroup | None) -> None:
        state = self.console_app.state
        table = self.query_one("#prompt-completions", CompletionsTable)
        width = table.size.width or self.size.width
        table.set_group(group, state.reward_functions, text_width(width, state.reward_functions))

    def _show_prompt(self, state: RunState) -> None:
        curve_box = self.query_one("#prompt-curve", Static)
        groups_table = self.query_one("#prompt-groups", GroupsTable)
        h = state.prompts.histories.get(self.prompt) if self.prompt is not None else None
        rng = state.prompts.reward_range
        if h is None or rng is None:
            curve_box.update(Text("no prompt selected (enter on a prompt: its groups)", style="dim"))
            groups_table.set_groups([], 16)
            self._show_group(None)
            return
        status = state.prompts.status(h.prompt) or "mixed"
        held = prompt_groups(state, h.prompt)
        width = curve_box.size.width or self.size.width
        head = Text(no_wrap=True, overflow="ellipsis", end="")
        head.append(f" {status} ", style=STATUS_STYLES.get(status) or "")
        head.append(f" {h.groups} groups, {h.zero_std} zero-std, steps {h.first_step}–{h.last_step}, "
                    f"{len(held)} held ", style="bold")
        head.append(one_line(h.prompt), style="italic")
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(" mean per group ", style="dim")
        line.append(curve(h.means, *rng, width=max(width - 40, 8)), style=STATUS_STYLES.get(status) or "")
        line.append(f"  first {h.first_mean:.3f} → last {h.last_mean:.3f}  range {rng[0]:.2f}…{rng[1]:.2f}"
                    + (" (declared)" if state.prompts.bounds is not None else " (seen)"), style="dim")
        both = Text("\n").join([head, line])
        both.no_wrap, both.overflow = True, "ellipsis"
        curve_box.update(both)
        gwidth = groups_table.size.width or self.size.width
        groups_table.set_groups(held, max(gwidth - 48, 8))
        self._show_group(groups_table.selected_group)

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        tracker = state.prompts
        statuses = FILTERS[self.filter_index][1]
        rows = tracker.rows(statuses)
        rng = tracker.reward_range or (0.0, 0.0)
        table = self.query_one(PromptCurvesTable)
        width = table.size.width or self.size.width
        select, self._select = self._select, None
        table.set_rows(rows, rng, prompt_width(width), select=select)
        self.prompt = table.selected_prompt  # the table's cursor is the selection
        counts = tracker.counts()
        title = Text(no_wrap=True, overflow="ellipsis", end="")
        title.append(f"{len(rows)}/{len(tracker)} prompts ", style="bold")
        title.append(f"f:{self.filter_name} ", style="bold reverse yellow" if self.filter_index else "bold")
        for s in STATUSES:
            title.append(f"· {s.replace(' solved', '')} {counts[s]} ", style=STATUS_STYLES.get(s) or "")
        if tracker.dropped:
            title.append(f"· {tracker.dropped} least recent dropped ", style="dim")
        if not len(tracker):
            title = Text("no groups yet: prompts appear with their first sampled group", style="dim")
        self.query_one("#prompts-title", Static).update(title)
        self._show_prompt(state)
