"""OverlayChart: several runs' curves of one metric on one step axis, each in its run's colour,
with the operator commands marked where they took effect (`rl-console compare`).

Drawn like RewardChart (braille dots as plain segments, its tick helpers): every run is
mapped onto the same dot columns (the shared step axis; stretched when there are fewer steps
than columns, bucketed when there are more) and the same y scale. A cell holds dots of one
run (drawn in its colour) or of several (drawn white: the curves cross or coincide there).
A step where a run has no value (KL without beta, a skipped update, steps after the run
ended) breaks its line instead of being bridged.

Commands sit on the row under the plot, as their run's letter in its colour (↻: a resume),
in the column of the first step they affected, and a dim guide runs up through the plot in
that column so the eye can find the curve there. A column that is taken sends a mark to the
nearest free one (at most MARKER_SHIFT away), else the column shows `+` (several).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from console.widgets.reward_chart import (
    _AXIS_W, _DOT, AXIS, MARKER_SHIFT, SEVERAL, drawn_line, nice_ticks, tick_label, tick_priority,
)

SHARED = Style(color="white", bold=True)  # a cell with dots of more than one run
CURSOR = Style(bgcolor="grey35")  # the column of the step the legend reads out


@dataclass(frozen=True)
class Curve:
    letter: str
    color: str  # a Rich colour name
    values: tuple[float | None, ...]  # one per axis step; None: no value there


@dataclass(frozen=True)
class Mark:
    step: int  # the first step the command affected
    letter: str  # "A", or "↻" for a resume
    color: str


def dot_columns(n: int, columns: int) -> list[int]:
    """The dot column of each of `n` axis steps on `columns` dot columns: spread evenly when
    they fit, else several steps to a column."""
    if n <= 0 or columns <= 0:
        return []
    if n == 1:
        return [0]
    if n <= columns:
        return [round(i * (columns - 1) / (n - 1)) for i in range(n)]
    return [min(i * columns // n, columns - 1) for i in range(n)]


def curve_points(values: Sequence[float | None], xs: Sequence[int]) -> list[tuple[int, float | None]]:
    """(dot column, value) in column order: the mean of a column's values; None where the
    column has steps but no value (a gap the line must not bridge)."""
    cols: dict[int, list[float]] = {}
    for x, v in zip(xs, values):
        bucket = cols.setdefault(x, [])
        if v is not None:
            bucket.append(v)
    return [(x, sum(vs) / len(vs) if vs else None) for x, vs in sorted(cols.items())]


class OverlayChart(Widget):
    """Passive: the screen calls `show(axis, curves, marks, title)`."""

    DEFAULT_CSS = """
    OverlayChart {
        height: 1fr;
        min-height: 6;
        border: round $primary 60%;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.axis: list[int] = []
        self.curves: list[Curve] = []
        self.marks: list[Mark] = []
        self._lines: list[list[tuple[str, Style]]] | None = None
        self._drawn_size: tuple[int, int] = (0, 0)
        self.empty = "no values"
        self.cursor: int | None = None

    def show(self, axis: Sequence[int], curves: Sequence[Curve], marks: Sequence[Mark], title: str, *,
             subtitle: str = "", empty: str = "no values", cursor: int | None = None) -> None:
        """`cursor`: a step of `axis` to highlight (its column), or None."""
        self.axis, self.curves, self.marks, self.empty = list(axis), list(curves), list(marks), empty
        self.cursor = cursor if cursor in self.axis else None
        self.border_title = title
        self.border_subtitle = subtitle
        self._lines = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        return drawn_line(self, y, self.draw)

    def plain_lines(self, width: int, height: int) -> list[str]:
        """The chart as text (tests, and a check of what a size shows)."""
        return ["".join(text for text, _ in line) for line in self.draw(width, height)]

    def draw(self, width: int, height: int) -> list[list[tuple[str, Style]]]:
        """Each line as runs of (text, style); every character is one cell wide."""
        present = [v for c in self.curves for v in c.values if v is not None]
        if not self.axis or not present:
            msg = self.empty
            return [[(" " * max((width - len(msg)) // 2, 0) + msg, Style(dim=True))]]
        plot_w = max(width - _AXIS_W, 1)
        plot_h = max(height - 2, 1)
        xs = dot_columns(len(self.axis), plot_w * 2)
        bottom, top, tick = nice_ticks(min(present), max(present), min(2 * plot_h - 2, 10))
        dots_h = plot_h * 4

        def ydot(value: float) -> int:
            return min(max(round((top - value) / (top - bottom) * (dots_h - 1)), 0), dots_h - 1)

        bits = [[0] * plot_w for _ in range(plot_h)]
        owners = [[0] * plot_w for _ in range(plot_h)]  # bit i: curve i has dots in the cell
        for i, curve in enumerate(self.curves):
            prev: tuple[int, int] | None = None

            def dot(x: int, yy: int, i: int = i) -> None:
                bits[yy // 4][x // 2] |= _DOT[yy % 4][x % 2]
                owners[yy // 4][x // 2] |= 1 << i

            for x, value in curve_points(curve.values, xs):
                if value is None:
                    prev = None
                    continue
                y = ydot(value)
                if prev is None:
                    dot(x, y)
                else:  # a straight line from the previous point, each column joined to the last
                    x0, y0 = prev
                    last = y0
                    for xx in range(x0 + 1, x + 1):
                        yy = round(y0 + (y - y0) * (xx - x0) / (x - x0))
                        for k in range(min(last, yy), max(last, yy) + 1):
                            dot(xx, k)
                        last = yy
                prev = (x, y)

        marks = self.place_marks(xs, plot_w)
        guides = {c: Style(color=style.color, dim=True) for c, (_, style) in marks.items() if style is not SEVERAL[1]}
        labels: dict[int, str] = {}
        for k in tick_priority(bottom, top, tick):
            value = bottom + k * tick
            row = ydot(value) // 4
            if all(abs(row - other) >= 2 for other in labels):
                labels[row] = tick_label(value, tick)
        styles = {1 << i: Style(color=c.color, bold=True) for i, c in enumerate(self.curves)}
        cursor_col = -1 if self.cursor is None else min(xs[self.axis.index(self.cursor)] // 2, plot_w - 1)
        lines = []
        for r in range(plot_h):
            line: list[tuple[str, Style]] = [(labels.get(r, " " * (_AXIS_W - 1)) + "┤", AXIS)]
            run: list[str] = []
            run_style: Style | None = None
            for c in range(plot_w):
                if bits[r][c]:
                    ch, style = chr(0x2800 + bits[r][c]), styles.get(owners[r][c], SHARED)
                elif c in guides:
                    ch, style = "┊", guides[c]
                else:
                    ch, style = " ", Style()
                if c == cursor_col:
                    style = style + CURSOR
                if style != run_style and run:
                    line.append(("".join(run), run_style or Style()))
                    run = []
                run_style = style
                run.append(ch)
            if run:
                line.append(("".join(run), run_style or Style()))
            lines.append(line)
        cells: list[tuple[str, Style]] = [("─", AXIS)] * plot_w
        for c, cell in marks.items():
            cells[c] = cell
        if cursor_col >= 0 and cursor_col not in marks:
            cells[cursor_col] = ("┴", AXIS + CURSOR)
        lines.append([(" " * (_AXIS_W - 1) + "└", AXIS), *cells])
        lines.append([(" " * _AXIS_W + self.step_labels(xs, plot_w, cursor_col), AXIS)])
        return lines[: max(height, 1)]

    def place_marks(self, xs: Sequence[int], width: int) -> dict[int, tuple[str, Style]]:
        """Column -> (letter, style). A mark sits in the column of its step (one after the last
        step shown, e.g. a pause of a live run: the last column); marks before the first step
        shown are left out. A taken column sends a mark to the nearest free one within
        MARKER_SHIFT (right first), else the column becomes SEVERAL."""
        out: dict[int, tuple[str, Style]] = {}
        if not self.axis or width <= 0:
            return out
        index = {s: i for i, s in enumerate(self.axis)}
        for mark in sorted(self.marks, key=lambda m: m.step):
            if mark.step < self.axis[0]:
                continue
            i = index.get(mark.step)
            if i is None:  # between shown steps: the next one's column; past the end: the last
                i = next((j for j, s in enumerate(self.axis) if s > mark.step), len(self.axis) - 1)
            c = min(xs[i] // 2, width - 1)
            for shift in (0, *(d for k in range(1, MARKER_SHIFT + 1) for d in (k, -k))):
                if 0 <= c + shift < width and c + shift not in out:
                    out[c + shift] = (mark.letter, Style(color=mark.color, bold=True))
                    break
            else:
                out[c] = SEVERAL
        return out

    def step_labels(self, xs: Sequence[int], width: int, cursor_col: int = -1) -> str:
        """Step numbers at their columns: the first and the last, and between them as many as
        fit with a gap of at least 4 cells, evenly spread; with a cursor, only its step (under
        its column, as near as fits) between the first and the last."""
        line = [" "] * width
        if cursor_col >= 0 and self.cursor is not None:
            first, last, here = str(self.axis[0]), str(self.axis[-1]), f"▲{self.cursor}"
            line[: len(first)] = first
            line[max(width - len(last), 0):] = last
            col = min(max(cursor_col, 0), max(width - len(here), 0))
            line[col:col + len(here)] = here
            return "".join(line[:width])
        first, last = str(self.axis[0]), str(self.axis[-1])
        line[: len(first)] = first
        end = max(width - len(last), len(first) + 1)
        line[end:end + len(last)] = last
        spots = max(0, min(len(self.axis) - 2, (width - len(first) - len(last)) // 10))
        free = len(first) + 4
        for k in range(1, spots + 1):
            i = round(k * (len(self.axis) - 1) / (spots + 1))
            label = str(self.axis[i])
            col = min(xs[i] // 2, width - 1)
            if col >= free and col + len(label) + 4 <= end:
                line[col:col + len(label)] = label
                free = col + len(label) + 4
        return "".join(line[:width])
