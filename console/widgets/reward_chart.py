"""RewardChart: a braille line plot of reward per step, with a ±std band, the reward's natural
bounds and markers.

Drawn as plain segments through Textual's line API (no plotting package): it repaints on
every tick of a live run, and letting Textual convert a rich `Text` of ~20 styled lines cost
~12 ms a paint on a 2-core box (most of it style conversion), several times the drawing. The whole buffered history is fitted to
the widget's width: fewer steps than dot columns are stretched (linear interpolation), more
are bucketed (mean of the means, min/max of the band); the screen passes the window to show
(the whole run, or the last N steps). Markers (params applied, resync, pause, resume, alert)
sit on a row under the plot, in the column of their step; one whose column is taken moves to
the nearest free column (at most MARKER_SHIFT away), and where none is free the column shows
`+` (several): no marker hides another. The reward's natural bounds (the ranges its functions
declare; never guessed) are dotted rows, labelled on the axis, and always inside the y range.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from console.state import Marker


def drawn_line(widget, y: int, draw) -> Strip:
    """Line `y` of a chart drawn whole as lines of (text, style) runs by `draw(width, height)`,
    kept in `widget._lines` until its size changes (`widget._drawn_size`) or it is reset to None."""
    width, height = widget.size
    base = widget.rich_style
    if widget._lines is None or widget._drawn_size != (width, height):
        widget._lines, widget._drawn_size = draw(width, height), (width, height)
    if y >= len(widget._lines):
        return Strip.blank(width, base)
    runs = widget._lines[y]
    return Strip([Segment(text, base + style) for text, style in runs],
                 sum(len(text) for text, _ in runs)).crop_extend(0, width, base)

# braille dot bits indexed [row 0..3][col 0..1]
_DOT = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
_AXIS_W = 8  # "-12.345┤"
LINE = Style(color="bright_cyan", bold=True)
BAND = Style(bgcolor="#203848")
AXIS = Style(color="grey58")
BOUND = Style(color="yellow", dim=True)
MARKER_STYLES = {
    "params": Style(color="yellow", bold=True),
    "resync": Style(color="magenta", bold=True),
    "pause": Style(color="cyan", bold=True),
    "resume": Style(color="green", bold=True),
    "alert": Style(color="red", bold=True),
}
SEVERAL = ("+", Style(color="white", bold=True, reverse=True))  # a column with more markers than fit near it
MARKER_SHIFT = 2  # how far (columns) a marker may move from its step's column to stay visible


def nice_ticks(lo: float, hi: float, max_intervals: int) -> tuple[float, float, float]:
    """(bottom, top, step): the range [lo, hi] widened to multiples of a round step (1, 2, 2.5
    or 5 × 10^k) with at most `max_intervals` steps between bottom and top."""
    if hi - lo < 1e-9:  # a flat series: a unit-wide window around it
        lo, hi = lo - 0.5, hi + 0.5
    max_intervals = max(max_intervals, 1)
    raw = (hi - lo) / max_intervals
    magnitude = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10, 20, 25, 50, 100):
        step = mult * magnitude
        bottom, top = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
        if round((top - bottom) / step) <= max_intervals:
            return bottom, top, step
    return bottom, top, step


def tick_priority(bottom: float, top: float, step: float) -> list[int]:
    """Indexes of the ticks from `bottom` by `step`, roundest first: 0, then multiples of 5 (4
    for a 2.5 step) and 2 steps, then the rest; ties from the top down."""
    count = round((top - bottom) / step) + 1
    major = 4 if round(step / 10 ** math.floor(math.log10(step) + 1e-9), 6) == 2.5 else 5

    def rank(k: int) -> tuple[int, int]:
        n = round(bottom / step) + k  # the tick's value in steps
        return (0 if n == 0 else 1 if n % major == 0 else 2 if n % 2 == 0 else 3), -k

    return sorted(range(count), key=rank)


def tick_label(value: float, step: float) -> str:
    """`value` with as many decimals as `step` needs: 1.0 / 0.5 / 0 (never -0.0019 or 0.591)."""
    if abs(value) < step * 1e-6:
        text = "0"
    else:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        if round(step * 10**decimals, 6) % 1:  # 2.5 × 10^k needs one more
            decimals += 1
        text = f"{value:.{decimals}f}"
        if len(text) > _AXIS_W - 1:
            text = f"{value:.2g}"
    return text[: _AXIS_W - 1].rjust(_AXIS_W - 1)


def _lerp(a: float, b: float, f: float) -> float:
    return a + (b - a) * f


def fit_columns(
    series: Sequence[tuple[int, float, float | None]], columns: int
) -> tuple[list[tuple[float, float, float]], list[int]]:
    """Map a series onto `columns` dot columns: [(mean, band_lo, band_hi)] and x of each point."""
    n = len(series)
    if n == 0 or columns <= 0:
        return [], []
    lo_hi = [(m - (s or 0.0), m + (s or 0.0)) for _, m, s in series]
    if n == 1:
        m = series[0][1]
        return [(m, *lo_hi[0])] * columns, [0]
    if n <= columns:
        out = []
        for x in range(columns):
            t = x * (n - 1) / (columns - 1)
            i = min(int(t), n - 2)
            f = t - i
            out.append((
                _lerp(series[i][1], series[i + 1][1], f),
                _lerp(lo_hi[i][0], lo_hi[i + 1][0], f),
                _lerp(lo_hi[i][1], lo_hi[i + 1][1], f),
            ))
        return out, [round(i * (columns - 1) / (n - 1)) for i in range(n)]
    buckets: list[list[int]] = [[] for _ in range(columns)]
    xs = []
    for i in range(n):
        x = min(i * columns // n, columns - 1)
        buckets[x].append(i)
        xs.append(x)
    out = []
    for idx in buckets:
        out.append((sum(series[i][1] for i in idx) / len(idx), min(lo_hi[i][0] for i in idx), max(lo_hi[i][1] for i in idx)))
    return out, xs


def place_markers(markers: Sequence[Marker], steps: Sequence[int], xs: Sequence[int], width: int,
                  first_step: int | None = None) -> dict[int, tuple[str, Style]]:
    """Column -> (label, style) of each marker on a `width`-cell row. A marker sits in the column
    of its step (one between plotted steps: the next plotted step's); markers before
    `first_step` (outside the window) or after the last plotted step are left out. Placed in
    step order; a taken column sends a marker to the nearest free one within MARKER_SHIFT
    (right first), else its column becomes SEVERAL."""
    out: dict[int, tuple[str, Style]] = {}
    if not steps or width <= 0:
        return out
    for marker in sorted(markers, key=lambda m: m.step):
        if first_step is not None and marker.step < first_step:
            continue
        i = bisect.bisect_left(steps, marker.step)
        if i >= len(steps):
            continue
        c = min(xs[i] // 2, width - 1)
        for shift in (0, *(d for k in range(1, MARKER_SHIFT + 1) for d in (k, -k))):
            if 0 <= c + shift < width and c + shift not in out:
                out[c + shift] = (marker.label, MARKER_STYLES.get(marker.kind, Style(bold=True)))
                break
        else:
            out[c] = SEVERAL
    return out


def bound_label(value: float) -> str:
    text = f"{value:g}"
    if len(text) > _AXIS_W - 1:
        text = f"{value:.2g}"
    return text[: _AXIS_W - 1].rjust(_AXIS_W - 1)


#: style of a plot cell by kind: bit 0 = part of the line, bit 1 = inside the ±std band, bit 2 =
#: on a natural bound's row (drawn only where the line is not)
_CELL_STYLES = (Style(), LINE, BAND, LINE + BAND, BOUND, LINE, BAND + BOUND, LINE + BAND)


class RewardChart(Widget):
    """Passive: the screen calls `show(series, markers, label)`."""

    DEFAULT_CSS = """
    RewardChart {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: 1fr;
        min-height: 5;
        border: round $primary 60%;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._lines: list[list[tuple[str, Style]]] | None = None  # drawn for _drawn_size
        self._drawn_size: tuple[int, int] = (0, 0)
        self._series: list[tuple[int, float, float | None]] = []
        self._markers: list[Marker] = []
        self._bounds: tuple[float, float] | None = None
        self._first_step: int | None = None
        self.label = "total"

    def show(self, series: Sequence[tuple[int, float, float | None]], markers: Sequence[Marker], label: str, *,
             bounds: tuple[float, float] | None = None, span: str = "", first_step: int | None = None) -> None:
        """`series`: the steps to draw (the window); `bounds`: the reward's natural bounds, when
        known; `span`: what the window is, for the title; markers before `first_step` are left out."""
        self._series = list(series)
        self._markers = list(markers)
        self._bounds = bounds
        self._first_step = first_step
        self.label = label
        band = " ±std" if any(s is not None for _, _, s in self._series) else ""
        title = f"reward · {label} · mean{band}"
        if span:
            title += f" · {span}"
        if bounds is not None:
            title += f" · bounds {bounds[0]:g}…{bounds[1]:g}"
        self.border_title = title
        self.border_subtitle = "f fn  z zoom  P params W sync ‖ pause ! alert"
        self._lines = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        return drawn_line(self, y, self._draw)

    def _draw(self, width: int, height: int) -> list[list[tuple[str, Style]]]:
        """Each line as runs of (text, style); every character is one cell wide."""
        if not self._series:
            msg = "waiting for the first step…"
            left = max((width - len(msg)) // 2, 0)
            return [[(" " * left + msg, Style(dim=True))]]
        plot_w = max(width - _AXIS_W, 1)
        plot_h = max(height - 2, 1)
        cols, xs = fit_columns(self._series, plot_w * 2)
        lo_all, hi_all = min(lo for _, lo, _ in cols), max(hi for _, _, hi in cols)
        if self._bounds is not None:  # the natural bounds are always in view
            lo_all, hi_all = min(lo_all, self._bounds[0]), max(hi_all, self._bounds[1])
        # the range widened to round ticks (up to two per row); labelled: the roundest that fit
        bottom, top, tick = nice_ticks(lo_all, hi_all, min(2 * plot_h - 2, 10))
        dots_h = plot_h * 4

        def ydot(value: float) -> int:
            return min(max(round((top - value) / (top - bottom) * (dots_h - 1)), 0), dots_h - 1)

        bits = [[0] * plot_w for _ in range(plot_h)]
        band = [[False] * plot_w for _ in range(plot_h)]
        cell_span = (top - bottom) / plot_h
        prev = None
        for x, (mean, lo, hi) in enumerate(cols):
            y = ydot(mean)
            y0, y1 = (y, y) if prev is None else (min(prev, y), max(prev, y))  # vertical run keeps it connected
            for yy in range(y0, y1 + 1):
                bits[yy // 4][x // 2] |= _DOT[yy % 4][x % 2]
            prev = y
            if hi > lo:
                for r in range(plot_h):
                    r_top = top - r * cell_span
                    if lo <= r_top and hi >= r_top - cell_span:
                        band[r][x // 2] = True

        labels: dict[int, str] = {}  # row -> the tick value drawn there (the row its dots fall in)
        bound_rows: set[int] = set()
        for value in self._bounds or ():
            row = ydot(value) // 4
            bound_rows.add(row)
            on_tick = abs(value / tick - round(value / tick)) < 1e-6
            labels[row] = tick_label(value, tick) if on_tick else bound_label(value)
        for k in tick_priority(bottom, top, tick):
            value = bottom + k * tick
            row = ydot(value) // 4
            if all(abs(row - other) >= 2 for other in labels):  # a blank row between labels
                labels[row] = tick_label(value, tick)
        lines = []
        for r in range(plot_h):
            label = labels.get(r, " " * (_AXIS_W - 1))
            line: list[tuple[str, Style]] = [(label + "┤", AXIS)]
            row_bits, row_band = bits[r], band[r]
            on_bound = 4 if r in bound_rows else 0
            empty = "┈" if on_bound else " "
            run: list[str] = []
            run_kind = -1
            for c in range(plot_w):  # one span per run of equally styled cells, not one per cell
                kind = (1 if row_bits[c] else 0) | (2 if row_band[c] else 0) | on_bound
                if kind != run_kind and run:
                    line.append(("".join(run), _CELL_STYLES[run_kind]))
                    run = []
                run_kind = kind
                run.append(chr(0x2800 + row_bits[c]) if row_bits[c] else empty)
            if run:
                line.append(("".join(run), _CELL_STYLES[run_kind]))
            lines.append(line)
        lines.append(self._marker_row(xs, plot_w))
        lines.append(self._axis_row(plot_w))
        return lines[: max(height, 1)]

    def _marker_row(self, xs: list[int], plot_w: int) -> list[tuple[str, Style]]:
        cells: list[tuple[str, Style]] = [("─", AXIS)] * plot_w
        steps = [s for s, _, _ in self._series]
        for c, cell in place_markers(self._markers, steps, xs, plot_w, self._first_step).items():
            cells[c] = cell
        return [(" " * (_AXIS_W - 1) + "└", AXIS), *cells]

    def _axis_row(self, plot_w: int) -> list[tuple[str, Style]]:
        first, last = self._series[0][0], self._series[-1][0]
        left, right = f"step {first}", f"{last}"
        gap = max(plot_w - len(left) - len(right), 1)
        return [(" " * _AXIS_W + left + " " * gap + right, AXIS)]
