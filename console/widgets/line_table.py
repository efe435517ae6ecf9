"""LineTable: a virtual, read-only table for data that changes on every repaint tick.

Textual's DataTable measures and renders every cell through rich on each rebuild (profiled: a
group's 8 completions cost ~70 ms to set and paint on a 2-core box; 500 groups ~300 ms), and
under a flood the samples screen rebuilds both tables every second while a key press waits.
Here a subclass only says how many rows there are and what a row's cells are; rows are
formatted when painted, and only the ones on screen (console/widgets/rows.py: one segment per
cell). Keys: up/down, page up/down, home/end, enter (open); a click moves the cursor, a click on
the cursor row opens it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.widgets.rows import BOLD, Cell, row_strip


class LineTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LineTable {
        height: 1fr;
        min-height: 4;
        background: $surface;
    }
    LineTable > .line-table--header {
        text-style: bold;
        background: $panel;
        color: $foreground;
    }
    LineTable > .line-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LineTable:focus > .line-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    LineTable > .line-table--even-row {
        background: $surface-lighten-1 40%;
    }
    """
    COMPONENT_CLASSES = {"line-table--header", "line-table--cursor", "line-table--even-row"}
    BINDINGS = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("enter", "open", "open", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cursor_row = 0
        self._labels: tuple[str, ...] = ()
        self._right: frozenset[int] = frozenset()
        self._widths: tuple[int, ...] = ()
        self._count = 0

    # -- for subclasses ---------------------------------------------------------------------
    def row_cells(self, row: int) -> Sequence[Cell]:
        raise NotImplementedError

    def highlighted(self, row: int) -> None:
        """The user moved the cursor to `row`."""

    def opened(self, row: int) -> None:
        """Enter (or a click) on `row`."""

    def set_shape(self, count: int, labels: Sequence[str], widths: Sequence[int], right: Sequence[int] = ()) -> None:
        """Row count and columns (labels, widths, right-justified column indices)."""
        self._count, self._labels, self._widths, self._right = count, tuple(labels), tuple(widths), frozenset(right)
        self.cursor_row = min(self.cursor_row, max(0, count - 1))
        self.virtual_size = Size(sum(self._widths) + max(0, len(self._widths) - 1), count + 1)
        self.refresh()

    # -- what tests and screens read ----------------------------------------------------------
    @property
    def row_count(self) -> int:
        return self._count

    @property
    def column_labels(self) -> tuple[str, ...]:
        return self._labels

    def get_row_at(self, row: int) -> list[str]:
        """The cell texts of one row, as painted (without padding)."""
        return [cell.text for cell in self.row_cells(row)]

    # -- painting ---------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base: Style = self.rich_style
        if y == 0:
            base = base + self.get_component_rich_style("line-table--header")
            cells = [Cell(label, BOLD, right=i in self._right) for i, label in enumerate(self._labels)]
            return row_strip(cells, self._widths, base).crop_extend(scroll_x, scroll_x + width, base)
        row = scroll_y + y - 1
        if row >= self._count:
            return Strip.blank(width, base)
        if row == self.cursor_row:
            base = base + self.get_component_rich_style("line-table--cursor")
        elif row % 2:
            base = base + self.get_component_rich_style("line-table--even-row")
        return row_strip(self.row_cells(row), self._widths, base).crop_extend(scroll_x, scroll_x + width, base)

    # -- the cursor ---------------------------------------------------------------------------
    def scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)  # minus the header line
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def move_cursor(self, *, row: int, animate: bool = False, scroll: bool = True) -> None:
        if not self._count:
            return
        row = max(0, min(row, self._count - 1))
        changed = row != self.cursor_row
        self.cursor_row = row
        if scroll:
            self.scroll_to_cursor()
        self.refresh()
        if changed:
            self.highlighted(row)

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(row=self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(row=self.cursor_row + direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        self.move_cursor(row=0 if where == 0 else self._count - 1)

    def action_open(self) -> None:
        if 0 <= self.cursor_row < self._count:
            self.opened(self.cursor_row)

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:  # the header
            return
        row = self.scroll_offset.y + event.y - 1
        if not 0 <= row < self._count:
            return
        if row == self.cursor_row:
            self.opened(row)
        else:
            self.move_cursor(row=row, scroll=False)

    def on_resize(self) -> None:
        self.scroll_to_cursor()
