"""RunHeader: the one-line status bar at the top of every screen."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from console.state import RunState, fmt_elapsed

STATE_STYLES = {
    "starting": "bold black on yellow",
    "running": "bold black on green",
    "pausing": "bold black on dark_orange",
    "paused": "bold black on cyan",
    "stopping": "bold black on dark_orange",
    "finished": "bold white on blue",
    "failed": "bold white on red",
    "crashed": "bold white on red",
    "unknown": "bold white on grey37",
}


class RunHeader(Widget):
    """Passive: the screen calls `show(state, mode=...)`."""

    DEFAULT_CSS = """
    RunHeader {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: 1;
        background: $panel;
        color: $text;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text("rl-console")

    def show(
        self, state: RunState, *, screen_name: str = "", replay: bool = False, read_only: bool = False, replay_at: str = ""
    ) -> None:
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append(" rl-console ", style="bold reverse")
        if screen_name:
            t.append(f" {screen_name} ", style="bold")
        t.append(f" {state.run_id or '…'} ", style="bold")
        if not replay or state.state in ("finished", "failed", "crashed"):  # replay is no live RUNNING
            t.append(f" {state.state.upper()} ", style=STATE_STYLES.get(state.state, "bold"))
        if state.connection == "disconnected" and state.state != "crashed":
            t.append(" DISCONNECTED ", style="bold white on red")
        elif state.connection == "connecting":
            t.append(" connecting… ", style="bold yellow")
        if replay:
            t.append(" REPLAY ", style="bold black on magenta")
            if replay_at:
                t.append(f" {replay_at} ", style="bold magenta")
        elif read_only:
            t.append(" READ-ONLY ", style="bold black on grey70")
        t.append(f" step {state.step}", style="bold")
        t.append(f"  w v{state.weight_version}")
        t.append(f"  {fmt_elapsed(state.elapsed)}")
        if state.profile:
            t.append(f"  {state.profile}", style="dim")
        if state.model:
            t.append(f"  {state.model}", style="dim")
        self._text = t
        self.refresh()

    @property
    def plain(self) -> str:
        return self._text.plain

    def render(self) -> Text:
        return self._text
