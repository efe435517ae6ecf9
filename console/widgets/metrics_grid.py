"""MetricsGrid: small multiples of the per-step metrics, one sparkline each.

Each cell is two lines: the metric's name with its newest value and range, then a sparkline
of its history resampled to the cell's width. Cells flow into as many columns as fit (one
at 80 columns, two from 120), so 80×24 shows the essentials and 160×48 shows them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

BLOCKS = "▁▂▃▄▅▆▇█"
CELL_MIN_WIDTH = 56


@dataclass
class Series:
    name: str
    values: list[float]  # oldest first; steps where it was not measured are left out
    fmt: str = "{:.3g}"
    style: str = "cyan"
    empty: str = "none logged yet"  # shown while there is no value
    trend: bool = False  # show ↑ / ↓ / → (the mean of the newest TREND values against the TREND before)


TREND = 5


def trend_arrow(values: Sequence[float]) -> str:
    """↑ / ↓ when the mean of the newest TREND values moved by more than 10% of the series' range
    from the mean of the TREND before them; → otherwise; "" with too few values."""
    if len(values) < 2 * TREND:
        return ""
    new, old = values[-TREND:], values[-2 * TREND:-TREND]
    span = max(values) - min(values)
    move = sum(new) / TREND - sum(old) / TREND
    if span <= 0 or abs(move) <= 0.1 * span:
        return "→"
    return "↑" if move > 0 else "↓"


def sparkline(values: Sequence[float], width: int) -> str:
    """`values` resampled to `width` cells (bucket means), scaled between their min and max."""
    if not values or width <= 0:
        return ""
    n = len(values)
    if n > width:
        buckets = [values[i * n // width:(i + 1) * n // width] for i in range(width)]
        values = [sum(b) / len(b) for b in buckets if b]
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 0:
        return BLOCKS[3] * len(values)
    return "".join(BLOCKS[min(int((v - lo) / span * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1)] for v in values)


class MetricsGrid(Widget):
    """Passive: the screen calls `show(series, heading)`."""

    DEFAULT_CSS = """
    MetricsGrid {
        height: 1fr;
        padding: 0 1;
        border: round $primary 60%;
        border-title-color: $text;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._series: list[Series] = []
        self.border_title = "metrics"

    def show(self, series: list[Series], heading: str = "") -> None:
        self._series = series
        self.border_title = f"metrics · {heading}" if heading else "metrics"
        self.refresh()

    def columns(self, width: int) -> int:
        return max(1, width // CELL_MIN_WIDTH)

    def cell(self, s: Series, width: int) -> tuple[Text, Text]:
        head = Text(no_wrap=True, overflow="ellipsis", end="")
        head.append(f"{s.name:<14}", style="bold")
        if s.values:
            head.append(s.fmt.format(s.values[-1]), style=f"bold {s.style}")
            if s.trend and trend_arrow(s.values):
                head.append(f" {trend_arrow(s.values)}", style=f"bold {s.style}")
            head.append(f"  min {s.fmt.format(min(s.values))} max {s.fmt.format(max(s.values))}", style="dim")
        else:
            head.append(f"–  {s.empty}", style="dim")
        spark = Text(sparkline(s.values[-width * 4:], width), style=s.style, no_wrap=True, end="")
        return head, spark

    def render(self) -> Text:
        width = max(self.size.width, 10)
        cols = self.columns(width)
        cell_w = (width - (cols - 1) * 2) // cols
        rows = max(self.size.height // 2, 1)
        shown = self._series[: rows * cols]
        lines: list[Text] = []
        for r in range(0, len(shown), cols):
            heads, sparks = Text(no_wrap=True, end=""), Text(no_wrap=True, end="")
            for c, s in enumerate(shown[r:r + cols]):
                head, spark = self.cell(s, cell_w)
                head.truncate(cell_w, pad=True)
                spark.truncate(cell_w, pad=True)
                gap = "  " if c else ""
                heads.append(gap).append_text(head)
                sparks.append(gap).append_text(spark)
            lines += [heads, sparks]
        if not lines:
            return Text("no step yet", style="dim")
        return Text("\n").join(lines)
