"""ProbeList: the run's probe prompts, one row each, with how their greedy output moved.

A LineTable (see line_table.py). Each row: the newest reward, its change since the first
recorded version, and in how many of the recorded versions the output differed from the
version before it (0: the policy says the same thing it always said for this prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.style import Style
from textual.message import Message

from console.state import fmt_num, one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, DIM, Cell

GREEN, RED = Style.parse("green"), Style.parse("red")
#: "≠ before": in how many of the versions compared the output differed from the version before
#: (the "≠" marks of the versions table below, counted)
COLUMNS = ("#", "reward", "Δ first", "≠ before", "prompt")
RIGHT = (0, 1, 2, 3)


class ProbeRow(NamedTuple):
    prompt: str
    reward: float | None  # at the newest recorded version
    first_reward: float | None  # at the oldest recorded version
    changes: int  # versions whose output differs from the version before
    versions: int  # versions recorded for this prompt


class ProbeList(LineTable):
    """Passive: the screen calls `set_rows(rows, prompt_width)`; announces the highlighted prompt."""

    class Selected(Message):
        def __init__(self, prompt: str) -> None:
            super().__init__()
            self.prompt = prompt

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[ProbeRow] = []
        self._prompt_width = 0

    @property
    def selected_prompt(self) -> str | None:
        return self._rows[self.cursor_row].prompt if 0 <= self.cursor_row < len(self._rows) else None

    def set_rows(self, rows: Sequence[ProbeRow], prompt_width: int) -> None:
        rows = list(rows)
        if rows == self._rows and prompt_width == self._prompt_width:
            return
        selected = self.selected_prompt
        self._rows, self._prompt_width = rows, prompt_width
        prompts = [r.prompt for r in rows]
        if selected in prompts:
            self.cursor_row = prompts.index(selected)  # the cursor stays on its prompt
        self.set_shape(len(rows), COLUMNS, (2, 6, 7, 8, max(prompt_width, 8)), RIGHT)

    def row_cells(self, row: int) -> list[Cell]:
        r = self._rows[row]
        delta = None if r.reward is None or r.first_reward is None else r.reward - r.first_reward
        return [
            Cell(str(row), right=True),
            Cell(fmt_num(r.reward), BOLD, right=True),
            Cell("–" if delta is None else f"{delta:+.3f}", GREEN if (delta or 0) > 0 else RED if (delta or 0) < 0 else DIM,
                 right=True),
            Cell(f"{r.changes}/{max(r.versions - 1, 0)}", None if r.changes else DIM, right=True),
            Cell(one_line(r.prompt, self._prompt_width)),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.Selected(self._rows[row].prompt))
