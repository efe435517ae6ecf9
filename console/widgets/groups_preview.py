"""GroupsPreview: a compact read-only table of the newest sample groups (dashboard)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.strip import Strip
from textual.widget import Widget

from backend.protocol.events import SampleGroup
from console.state import best_completion, is_zero_std, one_line
from console.widgets.rows import BOLD, BOLD_YELLOW, DIM, Cell, group_label, prompt_cell, row_strip, shared_prefix_cut

HEADER = ("group", "prompt", "mean", "std", "best completion")


class GroupsPreview(Widget):
    """Passive: the screen calls `show(groups)` with the newest groups first. Painted line by
    line from fixed widths (console/widgets/rows.py): it repaints on every tick of a live run."""

    DEFAULT_CSS = """
    GroupsPreview {
        height: 1fr;
        min-height: 3;
        border: round $primary 60%;
        border-title-color: $text;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._groups: list[SampleGroup] = []
        self._widths: tuple[int, ...] = ()
        self._prompt_cut = 0  # set with the widths (rows.shared_prefix_cut)
        self.border_title = "newest groups · s: samples"

    def show(self, groups: Sequence[SampleGroup]) -> None:
        self._groups = list(groups)
        self._widths = ()
        self.refresh()

    def _layout(self, width: int) -> tuple[int, ...]:
        rows = self._groups[: max(self.size.height - 1, 1)]
        w_id = max([5] + [len(group_label(g.step, g.group)) for g in rows])
        rest = max(width - w_id - 5 - 5 - 4, 16)  # 4 one-cell gaps
        # prompts that share a long prefix (a task's system prompt) show the part where they differ
        self._prompt_cut = shared_prefix_cut([g.prompt for g in rows], rest // 2)
        return (w_id, rest // 2, 5, 5, rest - rest // 2)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if not self._groups:
            return row_strip([Cell("no sample groups yet" if y == 0 else "", DIM)], [width], base)
        if not self._widths:
            self._widths = self._layout(width)
        if y == 0:
            cells = [Cell(h, BOLD, right=i in (0, 2, 3)) for i, h in enumerate(HEADER)]
            return row_strip(cells, self._widths, base).crop_extend(0, width, base)
        if y - 1 >= len(self._groups):
            return Strip.blank(width, base)
        g = self._groups[y - 1]
        best = best_completion(g)
        cells = [
            Cell(group_label(g.step, g.group), right=True),
            Cell(prompt_cell(g.prompt, self._prompt_cut, self._widths[1])),
            Cell(f"{g.reward_mean:.2f}", right=True),
            Cell(f"{g.reward_std:.2f}", BOLD_YELLOW if is_zero_std(g) else None, right=True),
            Cell(one_line(best.text, self._widths[4]) if best else "–", None if best else DIM),
        ]
        return row_strip(cells, self._widths, base).crop_extend(0, width, base)

    def on_resize(self) -> None:
        self._widths = ()
