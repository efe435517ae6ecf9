"""PromptList: prompts to start a try from (the probe prompts, then recent groups' prompts).

A LineTable (see line_table.py); Enter (or a click on the cursor row) announces `Picked`.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

from console.state import one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import DIM, Cell


class PromptList(LineTable):
    """Passive: `set_prompts([(source, prompt), ...], prompt_width)`."""

    class Picked(Message):
        def __init__(self, prompt: str) -> None:
            super().__init__()
            self.prompt = prompt

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[tuple[str, str]] = []
        self._width = 0

    def set_prompts(self, rows: Sequence[tuple[str, str]], prompt_width: int) -> None:
        self._rows, self._width = list(rows), prompt_width
        self.set_shape(len(self._rows), ("from", "prompt"), (14, max(prompt_width, 8)))

    def row_cells(self, row: int) -> list[Cell]:
        source, prompt = self._rows[row]
        return [Cell(source, DIM), Cell(one_line(prompt, self._width))]

    def opened(self, row: int) -> None:
        self.post_message(self.Picked(self._rows[row][1]))
