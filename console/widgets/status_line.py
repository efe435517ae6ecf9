"""StatusLine: one line above the footer with the last operator-relevant message (a command
accepted / applied / rejected with its reason, why a key did nothing, a lost connection).

It replaces toasts, which covered tables and modals for seconds, two per command. The message
stays until the next one; every event it summarises is also in the events log (`l`).
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

LEVEL_STYLES = {"information": "", "warning": "bold yellow", "error": "bold red"}
LEVEL_MARKS = {"information": "›", "warning": "!", "error": "✗"}


class StatusLine(Widget):
    """Passive: the app calls `show(message, severity)`."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        color: $text;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[str, str] = ("", "")
        self._text = Text()

    def show(self, message: str, severity: str = "information") -> None:
        if (message, severity) == self._shown:
            return
        self._shown = (message, severity)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if message:
            text.append(f" {LEVEL_MARKS.get(severity, '›')} ", style=LEVEL_STYLES.get(severity, "") or "dim")
            text.append(" ".join(message.split()), style=LEVEL_STYLES.get(severity, ""))
        self._text = text
        self.refresh()

    @property
    def plain(self) -> str:
        return self._text.plain

    def render(self) -> Text:
        return self._text
