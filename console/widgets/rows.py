"""Fixed-width table rows straight to segments, for the widgets that repaint under a flood.

rich's `Table` (and `Text.render`) measure, wrap and divide every cell on every paint; a row of
plain cells of known widths needs none of that: pad or cut each cell, one `Segment` per cell.
Measured on a 2-core box: ~10x cheaper per row than the rich path for the newest-groups rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from console.state import one_line

BOLD_YELLOW = Style.parse("bold yellow")
DIM = Style.parse("dim")
BOLD = Style.parse("bold")
ITALIC = Style.parse("italic")


class Cell(NamedTuple):
    text: str
    style: Style | None = None
    right: bool = False  # right-justified


def group_label(step: int, group: int) -> str:
    """A sample group's id, the one notation of every table and list: `s300 g15` (step 300,
    group 15; `300.15` read as a decimal)."""
    return f"s{step} g{group}"


def shared_prefix_cut(texts: Sequence[str], width: int) -> int:
    """Where to start showing each of `texts` (prompts) in a column `width` cells wide so the
    part that tells them apart is visible: past the prefix they all share (a task's long
    system or instruction prompt), from a word start a few words before they part; 0 (from the start)
    when that part is visible anyway, the texts are identical, or there are fewer than two."""
    if len(texts) < 2:
        return 0
    prefix = os.path.commonprefix(list(texts))
    if len(prefix) == min(len(t) for t in texts):  # identical (or one is the prefix of all)
        return 0
    if len(one_line(prefix)) <= width - max(8, width // 3):
        return 0
    # a few words of context before the parting point: from the first word start in the last half width
    start = max(len(prefix) - max(width // 2, 1), 0)
    match = re.search(r"\s\S", prefix[start:])
    if match is not None:
        return start + match.start() + 1
    cut = max(prefix.rfind(" "), prefix.rfind("\n"), prefix.rfind("\t")) + 1
    return cut or len(prefix)


def prompt_cell(text: str, cut: int, width: int) -> str:
    """`text` on one line in `width` cells, from `cut` (shared_prefix_cut) behind a leading "…"."""
    return one_line(text[cut:], width - 1).join(("…", "")) if cut else one_line(text, width)


def fit(text: str, width: int, right: bool = False) -> str:
    """`text` cut (with an ellipsis) or padded to exactly `width` cells."""
    n = cell_len(text)
    if n > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
    pad = " " * (width - n)
    return pad + text if right else text + pad


def row_strip(cells: Sequence[Cell], widths: Sequence[int], base: Style, gap: int = 1) -> Strip:
    """One line: the cells at `widths`, `gap` spaces apart, each cell's style over `base`."""
    segments: list[Segment] = []
    sep = Segment(" " * gap, base) if gap else None
    for i, (cell, width) in enumerate(zip(cells, widths)):
        if i and sep is not None:
            segments.append(sep)
        segments.append(Segment(fit(cell.text, width, cell.right), base + cell.style if cell.style else base))
    return Strip(segments, sum(widths) + gap * max(0, len(widths) - 1))
