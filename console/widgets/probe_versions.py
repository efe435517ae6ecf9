"""ProbeVersions: one probe prompt's greedy output at each recorded weight version, newest first.

A LineTable (see line_table.py): version, step, total and per-function rewards, length, cut
at max_tokens, whether the output changed from the version before, which two versions the
diff compares (`from` / `to`), and the output on one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from rich.style import Style
from textual.message import Message

from console.state import fmt_num, one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, BOLD_YELLOW, DIM, Cell

MARK = Style.parse("bold reverse cyan")
CHANGED = Style.parse("bold magenta")


def _widths(functions: Sequence[str]) -> tuple[int, ...]:
    """Every column's width but the output's."""
    return (4, 6, 5, 6, *(max(len(f), 6) for f in functions), 4, 3, 1)


class VersionRow(NamedTuple):
    weight_version: int
    step: int
    output: Any  # backend.protocol.events.ProbeOutput
    changed: bool | None  # differs from the version before (None: the oldest recorded)


class ProbeVersions(LineTable):
    """Passive: the screen calls `set_rows(rows, functions, marks, output_width)`; Enter announces `Chosen`."""

    class Chosen(Message):
        """Enter on a version: compare with it."""

        def __init__(self, weight_version: int) -> None:
            super().__init__()
            self.weight_version = weight_version

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[VersionRow] = []
        self._functions: tuple[str, ...] = ()
        self._marks: dict[int, str] = {}
        self._width = 0

    def set_rows(self, rows: Sequence[VersionRow], functions: Sequence[str], marks: dict[int, str], output_width: int) -> None:
        rows, functions = list(rows), tuple(functions)
        if (rows, functions, marks, output_width) == (self._rows, self._functions, self._marks, self._width):
            return
        keep = self._rows[self.cursor_row].weight_version if 0 <= self.cursor_row < len(self._rows) and self.cursor_row else None
        self._rows, self._functions, self._marks, self._width = rows, functions, dict(marks), output_width
        versions = [r.weight_version for r in rows]
        if keep in versions:  # a cursor on the newest row follows new versions; elsewhere it stays on its version
            self.cursor_row = versions.index(keep)
        labels = ("diff", "wv", "step", "reward", *functions, "len", "cut", "Δ", "output")
        widths = (*_widths(functions), max(output_width, 8))
        self.set_shape(len(rows), labels, widths, range(1, 5 + len(functions)))

    @staticmethod
    def fixed_width(functions: Sequence[str]) -> int:
        """Cells taken by every column but the output (with the gaps)."""
        widths = _widths(functions)
        return sum(widths) + len(widths) + 2

    def row_cells(self, row: int) -> list[Cell]:
        r = self._rows[row]
        o = r.output
        mark = self._marks.get(r.weight_version, "")
        return [
            Cell(mark, MARK if mark else None),
            Cell(f"v{r.weight_version}", right=True),
            Cell(str(r.step), right=True),
            Cell(fmt_num(o.reward), BOLD, right=True),
            *(Cell(fmt_num(o.rewards.get(name)), right=True) for name in self._functions),
            Cell(str(o.length), right=True),
            Cell("yes", BOLD_YELLOW) if o.truncated else Cell("no", DIM),
            Cell("" if r.changed is None else "≠" if r.changed else "=", CHANGED if r.changed else DIM),
            Cell(one_line(o.output, self._width)),
        ]

    def opened(self, row: int) -> None:
        self.post_message(self.Chosen(self._rows[row].weight_version))
