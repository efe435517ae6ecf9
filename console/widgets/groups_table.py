"""GroupsTable: every buffered sample group, one row each (samples screen)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from backend.protocol.events import SampleGroup
from console.state import is_zero_std, max_abs_advantage, one_line, truncated_count
from console.widgets.stable_table import StableTable

COLUMNS = ("step", "grp", "prompt", "mean", "std", "max|adv|", "trunc")


def group_key(group: SampleGroup) -> str:
    return f"{group.step}:{group.group}:{group.seq}"


class GroupsTable(StableTable):
    """Passive: the screen calls `set_groups(groups, prompt_width)`; announces the highlighted group."""

    DEFAULT_CSS = """
    GroupsTable {
        height: 1fr;
        min-height: 4;
    }
    """

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
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []
        self._groups: dict[str, SampleGroup] = {}
        self._prompt_width = 0

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    @property
    def selected_group(self) -> SampleGroup | None:
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._groups.get(self._keys[self.cursor_row])

    def set_groups(self, groups: Sequence[SampleGroup], prompt_width: int) -> bool:
        """Rebuild rows if the list changed; keeps the cursor on the same group. True if rebuilt."""
        keys = [group_key(g) for g in groups]
        if keys == self._keys and prompt_width == self._prompt_width:
            return False
        selected = self._keys[self.cursor_row] if self._keys and 0 <= self.cursor_row < len(self._keys) else None
        self.clear(columns=True)  # columns too: their widths would remember the old prompt width
        self.add_columns(*COLUMNS)
        self._keys, self._prompt_width = keys, prompt_width
        self._groups = dict(zip(keys, groups, strict=True))
        for key, g in zip(keys, groups, strict=True):
            trunc = truncated_count(g)
            self.add_row(
                str(g.step),
                str(g.group),
                one_line(g.prompt, prompt_width),
                Text(f"{g.reward_mean:.3f}", justify="right"),
                Text(f"{g.reward_std:.3f}", justify="right", style="bold yellow" if is_zero_std(g) else ""),
                Text(f"{max_abs_advantage(g):.3f}", justify="right"),
                Text(str(trunc), justify="right", style="bold yellow" if trunc else "dim"),
                key=key,
            )
        if selected in self._groups:
            self.move_cursor(row=keys.index(selected), animate=False, scroll=True)
        return True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        group = self._groups.get(event.row_key.value or "")
        if group is not None:
            self.post_message(self.GroupHighlighted(group))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        group = self._groups.get(event.row_key.value or "")
        if group is not None:
            self.post_message(self.GroupOpened(group))
