"""TryCompletions: one try's completions with the run's per-function rewards (playground).

A LineTable (see line_table.py). A reward function that could not score a completion (a
dataset column it reads was not given) shows `–`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.message import Message

from console.state import fmt_num, one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, BOLD_YELLOW, DIM, Cell


def _fixed(functions: Sequence[str]) -> list[int]:
    return [2, 6, *(max(len(f), 6) for f in functions), 4, 3]


class TryCompletions(LineTable):
    """Passive: the screen calls `set_completions(key, completions, functions, text_width)`;
    announces the highlighted completion."""

    class Highlighted(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key: tuple = ()
        self._completions: list[Any] = []
        self._functions: tuple[str, ...] = ()
        self._width = 0

    @staticmethod
    def fixed_width(functions: Sequence[str]) -> int:
        fixed = _fixed(functions)
        return sum(fixed) + len(fixed) + 2

    def set_completions(self, key: str, completions: Sequence[Any], functions: Sequence[str], text_width: int) -> None:
        signature = (key, len(completions), tuple(functions), text_width)
        if signature == self._key:
            return
        if key != (self._key[0] if self._key else None):
            self.cursor_row = 0
        self._key, self._completions, self._functions, self._width = signature, list(completions), tuple(functions), text_width
        labels = ("#", "total", *functions, "len", "cut", "text")
        self.set_shape(len(self._completions), labels, (*_fixed(functions), max(text_width, 8)), range(0, 3 + len(functions)))

    def row_cells(self, row: int) -> list[Cell]:
        c = self._completions[row]
        return [
            Cell(str(row), right=True),
            Cell(f"{c.reward:.3f}", BOLD, right=True),
            *(Cell(fmt_num(c.rewards.get(name)), right=True) for name in self._functions),
            Cell(str(c.length), right=True),
            Cell("yes", BOLD_YELLOW) if c.truncated else Cell("no", DIM),
            Cell(one_line(c.text, self._width)),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.Highlighted(row))
