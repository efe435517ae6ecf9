"""StartupProgress: the stage, message and a progress bar while the engine starts."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import Progress


def bar(fraction: float, width: int) -> Text:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(fraction * width)
    return Text.assemble(("█" * full, "bold green"), ("░" * (width - full), "grey37"))


class StartupProgress(Widget):
    """Passive: the screen calls `show(progress, state, reason)`."""

    DEFAULT_CSS = """
    StartupProgress {
        height: auto;
        border: round $warning;
        border-title-color: $warning;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._progress: Progress | None = None
        self._state = "unknown"
        self._reason = ""
        self.border_title = "starting"

    def show(self, progress: Progress | None, state: str, reason: str = "") -> None:
        self._progress, self._state, self._reason = progress, state, reason
        self.border_title = f"{state}: {progress.stage}" if progress else state
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 2

    def render(self) -> Text:
        width = max(self.size.width, 10)
        p = self._progress
        if p is None:
            return Text(f"waiting for the backend… {self._reason}".rstrip(), style="italic")
        head = Text(f"{p.stage}: ", style="bold")
        head.append(p.message)
        if p.total > 0:
            label = f" {p.current}/{p.total} {p.current / p.total:>4.0%}"
            line = bar(p.current / p.total, max(width - len(label), 4))
            line.append(label)
        else:
            line = Text(f"working… ({self._reason})" if self._reason else "working…", style="dim")
        head.no_wrap = True
        head.overflow = "ellipsis"
        return Text("\n").join([head, line])
