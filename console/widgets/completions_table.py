"""CompletionsTable: the G completions of one group with per-function rewards and advantages.

A LineTable (see line_table.py): under a flood the selected group changes on every refresh,
and the DataTable this replaces spent ~70 ms measuring and painting its 8 rows each time.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from textual.message import Message

from backend.protocol.events import SampleGroup
from console.state import fmt_num, one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, BOLD_YELLOW, DIM, Cell

GREEN, RED = Style.parse("green"), Style.parse("red")


def _fixed(functions: Sequence[str]) -> list[int]:
    return [2, 6, 7, *(max(len(f), 6) for f in functions), 4, 5, 3]


def text_width(table_width: int, functions: Sequence[str]) -> int:
    """Cells left for the text column once the fixed columns (and the gaps) are laid out."""
    fixed = _fixed(functions)
    return max(table_width - sum(fixed) - len(fixed) - 2, 12)


def signed(value: float) -> Cell:
    return Cell(f"{value:+.3f}", GREEN if value > 0 else RED if value < 0 else DIM, right=True)


class CompletionsTable(LineTable):
    """Passive: the screen calls `set_group(group, functions, text_width)`; Enter announces `Opened`."""

    class Opened(Message):
        """Enter on a completion: show its full text."""

        def __init__(self, group: SampleGroup, index: int) -> None:
            super().__init__()
            self.group = group
            self.index = index

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.group: SampleGroup | None = None
        self._functions: tuple[str, ...] | None = None
        self._text_width = 0

    def set_group(self, group: SampleGroup | None, functions: Sequence[str], text_width: int) -> None:
        functions = tuple(functions)
        if group is self.group and functions == self._functions and text_width == self._text_width:
            return
        self.group, self._functions, self._text_width = group, functions, text_width
        labels = ("#", "total", "adv", *functions, "len", "trunc", "wv", "text")
        widths = (*_fixed(functions), text_width)
        right = range(0, len(labels) - 3)  # all but trunc, wv, text
        if self.group is not None and self.cursor_row >= len(self.group.completions):
            self.cursor_row = 0
        self.set_shape(len(group.completions) if group else 0, labels, widths, right)

    def row_cells(self, row: int) -> list[Cell]:
        group = self.group
        assert group is not None
        c = group.completions[row]
        return [
            Cell(str(row), right=True),
            Cell(f"{c.reward:.3f}", BOLD, right=True),
            signed(c.advantage),
            *(Cell(fmt_num(c.rewards.get(name)), right=True) for name in self._functions or ()),
            Cell(str(c.length), right=True),
            Cell("yes", BOLD_YELLOW) if c.truncated else Cell("no", DIM),
            Cell(str(group.weight_version)),
            Cell(one_line(c.text, self._text_width)),
        ]

    def opened(self, row: int) -> None:
        if self.group is not None:
            self.post_message(self.Opened(self.group, row))
