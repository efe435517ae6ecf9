"""CompletionsTable: the G completions of one group with per-function rewards and advantages."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from backend.protocol.events import SampleGroup
from console.state import fmt_num, one_line
from console.widgets.stable_table import StableTable


def text_width(table_width: int, functions: Sequence[str]) -> int:
    """Cells left for the text column once the fixed columns (and their padding) are laid out."""
    fixed = [2, 5, 6, *(max(len(f), 5) for f in functions), 4, 5, 3]
    return max(table_width - sum(fixed) - 2 * (len(fixed) + 1) - 2, 12)


def signed(value: float) -> Text:
    return Text(f"{value:+.3f}", justify="right", style="green" if value > 0 else "red" if value < 0 else "dim")


class CompletionsTable(StableTable):
    """Passive: the screen calls `set_group(group, functions, text_width)`; Enter announces `Opened`."""

    DEFAULT_CSS = """
    CompletionsTable {
        height: 1fr;
        min-height: 4;
    }
    """

    class Opened(Message):
        """Enter on a completion: show its full text."""

        def __init__(self, group: SampleGroup, index: int) -> None:
            super().__init__()
            self.group = group
            self.index = index

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.group: SampleGroup | None = None
        self._functions: tuple[str, ...] | None = None
        self._text_width = 0

    def set_group(self, group: SampleGroup | None, functions: Sequence[str], text_width: int) -> None:
        functions = tuple(functions)
        if group is self.group and functions == self._functions and text_width == self._text_width:
            return
        if functions != self._functions:
            self.clear(columns=True)
            self.add_columns("#", "total", "adv", *functions, "len", "trunc", "wv", "text")
            self._functions = functions
        else:
            self.clear()
        self.group, self._text_width = group, text_width
        if group is None:
            return
        for i, c in enumerate(group.completions):
            self.add_row(
                str(i),
                Text(f"{c.reward:.3f}", justify="right", style="bold"),
                signed(c.advantage),
                *(Text(fmt_num(c.rewards.get(name)), justify="right") for name in functions),
                Text(str(c.length), justify="right"),
                Text("yes", style="bold yellow") if c.truncated else Text("no", style="dim"),
                str(group.weight_version),
                one_line(c.text, text_width),
                key=str(i),
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if self.group is not None and event.row_key.value is not None:
            self.post_message(self.Opened(self.group, int(event.row_key.value)))
