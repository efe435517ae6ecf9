"""GroupsPreview: a compact read-only table of the newest sample groups (dashboard)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import SampleGroup
from console.state import best_completion, is_zero_std, one_line


class GroupsPreview(Widget):
    """Passive: the screen calls `show(groups)` with the newest groups first."""

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
        self.border_title = "newest groups · s: samples"

    def show(self, groups: Sequence[SampleGroup]) -> None:
        self._groups = list(groups)
        self.refresh()

    def render(self) -> Table | Text:
        if not self._groups:
            return Text("no sample groups yet", style="dim")
        width, height = self.size
        rows = max(height - 1, 1)
        text_w = max((width - 30) // 2, 8)
        table = Table(box=None, expand=True, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("step", justify="right", no_wrap=True)
        table.add_column("prompt", no_wrap=True, ratio=1, overflow="ellipsis")
        table.add_column("mean", justify="right", no_wrap=True)
        table.add_column("std", justify="right", no_wrap=True)
        table.add_column("best completion", no_wrap=True, ratio=1, overflow="ellipsis")
        for g in self._groups[:rows]:
            best = best_completion(g)
            std = Text(f"{g.reward_std:.2f}", style="bold yellow" if is_zero_std(g) else "")
            table.add_row(
                f"{g.step}.{g.group}",
                one_line(g.prompt, text_w),
                f"{g.reward_mean:.2f}",
                std,
                one_line(best.text, text_w) if best else "–",
            )
        return table
