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
    StartupProgress.-ended {
        border: round $error;
        border-title-color: $error;
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
        self.border_title = state.upper() if self.ended else f"{state}: {progress.stage}" if progress else state
        self.set_class(self.ended, "-ended")
        self.refresh(layout=True)

    @property
    def ended(self) -> bool:
        return self._state in ("failed", "crashed")

    def _failure(self) -> Text:
        what = "the run failed before its first step" if self._state == "failed" else "the backend died before the first step"
        out = Text(what, style="bold red")
        out.append("\n" + (self._reason or "no reason was recorded; see the run's backend.log"))
        out.append("\nnext: fix the cause, then start the run again (`rl-console ls` lists it)", style="dim")
        return out

    def get_content_height(self, container, viewport, width: int) -> int:
        if self.ended:  # the whole reason, wrapped, up to 8 lines
            return min(len(self._failure().wrap(self.app.console, max(width, 10))), 8)
        return 2

    def render(self) -> Text:
        width = max(self.size.width, 10)
        if self.ended:
            return self._failure()
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
