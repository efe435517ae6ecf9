"""TryHistory: the playground's tries, newest first: this console's still waiting or refused,
then every answered one (this console's and other consoles' or scripts' `ctl try`), each
tagged with the weight version it was sampled at.

A LineTable (see line_table.py). The cursor stays on its try as rows come and go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.style import Style
from textual.message import Message

from console.state import one_line
from console.widgets.line_table import LineTable
from console.widgets.rows import BOLD, DIM, Cell

WAITING = Style.parse("bold yellow")
REFUSED = Style.parse("bold red")
COLUMNS = ("by", "wv", "step", "n", "mean", "status", "prompt")
RIGHT = (1, 2, 3, 4)
WIDTHS = (5, 6, 5, 3, 6, 9)


class TryRow(NamedTuple):
    command_id: str
    mine: bool
    status: str  # "done" | "sent" | "accepted" | "rejected" | "failed" | "send-failed" | "unanswered"
    prompt: str
    weight_version: int | None = None
    step: int | None = None
    n: int = 0
    mean: float | None = None


class TryHistory(LineTable):
    """Passive: the screen calls `set_rows(rows, prompt_width)` and `select(command_id)`;
    announces the highlighted try and the opened one (Enter: use its prompt again)."""

    class Highlighted(Message):
        def __init__(self, command_id: str) -> None:
            super().__init__()
            self.command_id = command_id

    class Opened(Message):
        def __init__(self, command_id: str) -> None:
            super().__init__()
            self.command_id = command_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[TryRow] = []
        self._width = 0

    @property
    def selected(self) -> str | None:
        return self._rows[self.cursor_row].command_id if 0 <= self.cursor_row < len(self._rows) else None

    def set_rows(self, rows: Sequence[TryRow], prompt_width: int) -> None:
        rows = list(rows)
        if rows == self._rows and prompt_width == self._width:
            return
        keep = self.selected
        self._rows, self._width = rows, prompt_width
        ids = [r.command_id for r in rows]
        if keep in ids:
            self.cursor_row = ids.index(keep)
        self.set_shape(len(rows), COLUMNS, (*WIDTHS, max(prompt_width, 8)), RIGHT)

    def select(self, command_id: str) -> None:
        ids = [r.command_id for r in self._rows]
        if command_id in ids:
            self.move_cursor(row=ids.index(command_id))

    @staticmethod
    def fixed_width() -> int:
        return sum(WIDTHS) + len(WIDTHS) + 2

    def row_cells(self, row: int) -> list[Cell]:
        r = self._rows[row]
        style = None if r.status == "done" else WAITING if r.status in ("sent", "accepted") else REFUSED
        return [
            Cell("you" if r.mine else "other", BOLD if r.mine else DIM),
            Cell("" if r.weight_version is None else f"v{r.weight_version}", right=True),
            Cell("" if r.step is None else str(r.step), right=True),
            Cell(str(r.n) if r.n else "", right=True),
            Cell("" if r.mean is None else f"{r.mean:.3f}", BOLD, right=True),
            Cell("waiting" if r.status in ("sent", "accepted") else r.status, style),
            Cell(one_line(r.prompt, self._width)),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.Highlighted(self._rows[row].command_id))

    def opened(self, row: int) -> None:
        self.post_message(self.Opened(self._rows[row].command_id))
