"""GroupsTable: every buffered sample group, one row each (samples screen).

A LineTable: `set_groups` stores the list and a few column widths (O(rows) of integer work);
rows are formatted only when painted. The DataTable it replaces cost ~160 ms to rebuild and
~140 ms to paint 500 groups under a 2,000 groups/s flood on a 2-core box (tui_load slowlog).
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

from backend.protocol.events import SampleGroup
from console.state import is_zero_std, max_abs_advantage, truncated_count
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD_YELLOW, DIM, Cell, group_label, prompt_cell, shared_prefix_cut

COLUMNS = ("group", "prompt", "mean", "std", "max|adv|", "trunc")  # group: `s300 g15` (rows.group_label)
RIGHT = (0, 2, 3, 4, 5)
_NUM = 8  # width of each numeric column


def group_key(group: SampleGroup) -> str:
    return f"{group.step}:{group.group}:{group.seq}"


class GroupsTable(LineTable):
    """Passive: the screen calls `set_groups(groups, prompt_width)`; announces the highlighted
    group (cursor moved by the user) and the opened one (enter, or a click on the cursor row)."""

    class GroupHighlighted(Message):
        def __init__(self, group: SampleGroup) -> None:
            super().__init__()
            self.group = group

    class GroupOpened(Message):
        """Enter on a group: the user wants its completions."""

        def __init__(self, group: SampleGroup) -> None:
            super().__init__()
            self.group = group

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[SampleGroup] = []
        self._keys: list[str] = []
        self._prompt_width = 0
        self._prompt_cut = 0  # where painted prompts start (rows.shared_prefix_cut)

    def on_mount(self) -> None:
        self.set_shape(0, COLUMNS, (8, 16, _NUM, _NUM, _NUM, 5), RIGHT)

    @property
    def selected_group(self) -> SampleGroup | None:
        return self._rows[self.cursor_row] if 0 <= self.cursor_row < len(self._rows) else None

    def set_groups(self, groups: Sequence[SampleGroup], prompt_width: int) -> bool:
        """Show `groups` (in this order). A cursor on the first row stays there (it follows the
        newest group, as a log tail does); anywhere else it stays on its group. True if changed."""
        keys = [group_key(g) for g in groups]
        if keys == self._keys and prompt_width == self._prompt_width:
            return False
        selected = self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None
        self._rows, self._keys, self._prompt_width = list(groups), keys, prompt_width
        # prompts that share a long prefix (a task's system prompt) show the part where they differ
        self._prompt_cut = shared_prefix_cut([g.prompt for g in self._rows], prompt_width)
        steps = max((g.step for g in self._rows), default=0)
        grps = max((g.group for g in self._rows), default=0)
        # as wide as the old two columns (`step grp`), so the prompt keeps its width
        widths = (max(8, len(group_label(steps, grps))), max(6, prompt_width), _NUM, _NUM, _NUM, 5)
        if self.cursor_row == 0 or selected is None or selected not in keys:
            row = self.cursor_row
        else:
            row = keys.index(selected)
        moved = row != self.cursor_row
        self.cursor_row = row
        self.set_shape(len(keys), COLUMNS, widths, RIGHT)
        if moved:
            self.scroll_to_cursor()
        return True

    def row_cells(self, row: int) -> list[Cell]:
        g = self._rows[row]
        trunc = truncated_count(g)
        return [
            Cell(group_label(g.step, g.group), right=True),
            Cell(prompt_cell(g.prompt, self._prompt_cut, self._prompt_width)),
            Cell(f"{g.reward_mean:.3f}", right=True),
            Cell(f"{g.reward_std:.3f}", BOLD_YELLOW if is_zero_std(g) else None, right=True),
            Cell(f"{max_abs_advantage(g):.3f}", right=True),
            Cell(str(trunc), BOLD_YELLOW if trunc else DIM, right=True),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.GroupHighlighted(self._rows[row]))

    def opened(self, row: int) -> None:
        self.post_message(self.GroupOpened(self._rows[row]))
