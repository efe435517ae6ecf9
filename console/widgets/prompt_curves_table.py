"""PromptCurvesTable: one row per prompt with its status and reward curve (prompts screen).

A LineTable (see line_table.py): rows are formatted only when painted. Enter (or a click on the
cursor row) announces `Opened`; moving the cursor announces `Highlighted`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from textual.message import Message

from console.prompt_curves import PromptHistory
from console.state import one_line
from console.widgets.line_table import LineTable
from console.widgets.metrics_grid import sparkline
from console.widgets.rows import DIM, Cell

STATUS_STYLES = {
    "always solved": Style.parse("green"),
    "never solved": Style.parse("bold red"),
    "learning": Style.parse("bold green"),
    "regressed": Style.parse("bold yellow"),
    "mixed": DIM,
}
CURVE_WIDTH = 12
COLUMNS = ("status", "groups", "first", "best", "last", "curve", "prompt")
_FIXED = (13, 6, 5, 5, 5, CURVE_WIDTH)


def prompt_width(table_width: int) -> int:
    """Cells left for the prompt once the fixed columns, the gaps and a scrollbar are laid out."""
    return max(table_width - sum(_FIXED) - len(_FIXED) - 2, 10)


def curve(values: Sequence[float], lo: float, hi: float, width: int = CURVE_WIDTH) -> str:
    """The means as a sparkline on the run's reward range (so curves compare across prompts)."""
    values = list(values)[-width:]
    if not values:
        return ""
    if hi - lo <= 0:
        return sparkline(values, width)
    clamped = [min(max(v, lo), hi) for v in values]
    return sparkline([lo, hi, *clamped], len(clamped) + 2)[2:]  # scaled between lo and hi


def common_prefix(prompts: Sequence[str]) -> int:
    """How many leading characters (whole words) every prompt shares, 0 if under 8: a task's
    prompts often differ only after a long common instruction, so that part is left out."""
    if len(prompts) < 2:
        return 0
    first, last = min(prompts), max(prompts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    cut = first.rfind(" ", 0, n) + 1  # back to a word boundary
    return cut if cut >= 8 else 0


class PromptCurvesTable(LineTable):
    """Passive: the screen calls `set_rows([(status, history), ...], (lo, hi), prompt_width)`."""

    class Highlighted(Message):
        def __init__(self, prompt: str) -> None:
            super().__init__()
            self.prompt = prompt

    class Opened(Message):
        """Enter on a prompt: the user wants its groups."""

        def __init__(self, prompt: str) -> None:
            super().__init__()
            self.prompt = prompt

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[tuple[str, PromptHistory]] = []
        self._range = (0.0, 0.0)
        self._prompt_width = 0
        self._skip = 0  # characters of the prompts' common prefix not shown (the part that differs is)

    @property
    def selected_prompt(self) -> str | None:
        return self._rows[self.cursor_row][1].prompt if 0 <= self.cursor_row < len(self._rows) else None

    def set_rows(self, rows: Sequence[tuple[str, PromptHistory]], reward_range: tuple[float, float], prompt_width: int,
                 select: str | None = None) -> None:
        """Show `rows`; the cursor stays on its prompt (or moves to `select`)."""
        keep = select or self.selected_prompt
        self._rows, self._range, self._prompt_width = list(rows), reward_range, prompt_width
        self._skip = common_prefix([h.prompt for _, h in self._rows])
        prompts = [h.prompt for _, h in self._rows]
        if keep in prompts:
            row = prompts.index(keep)
            if row != self.cursor_row:
                self.cursor_row = row
                self.set_shape(len(prompts), COLUMNS, (*_FIXED, max(prompt_width, 10)), (1, 2, 3, 4))
                self.scroll_to_cursor()
                return
        self.set_shape(len(prompts), COLUMNS, (*_FIXED, max(prompt_width, 10)), (1, 2, 3, 4))

    def row_cells(self, row: int) -> list[Cell]:
        status, h = self._rows[row]
        lo, hi = self._range
        best = max(h.best_mean, h.last_mean)
        return [
            Cell(status, STATUS_STYLES.get(status)),
            Cell(str(h.groups), right=True),
            Cell(f"{h.first_mean:.2f}", right=True),
            Cell(f"{best:.2f}", right=True),
            Cell(f"{h.last_mean:.2f}", right=True),
            Cell(curve(h.means, lo, hi), STATUS_STYLES.get(status)),
            Cell(one_line(("…" + h.prompt[self._skip:]) if self._skip else h.prompt, self._prompt_width)),
        ]

    def highlighted(self, row: int) -> None:
        self.post_message(self.Highlighted(self._rows[row][1].prompt))

    def opened(self, row: int) -> None:
        self.post_message(self.Opened(self._rows[row][1].prompt))
