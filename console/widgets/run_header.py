"""RunHeader: the one-line status bar at the top of every screen.

The run's state comes first. The line is fitted to the terminal's width: when it does not
fit, the least important parts are shortened, then dropped, in a fixed order (model, profile,
brand, weights, screen name, run id shortened then dropped, elapsed, ...), so that the
state, the connection and the step are readable down to 40 columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from console.state import RunState, fmt_elapsed

STATE_STYLES = {
    "starting": "bold black on yellow",
    "running": "bold black on green",
    "pausing": "bold black on dark_orange",
    "paused": "bold black on cyan",
    "stopping": "bold black on dark_orange",
    "completed": "bold white on blue",
    "stopped": "bold white on blue",
    "finished": "bold white on blue",
    "failed": "bold white on red",
    "crashed": "bold white on red",
    "unknown": "bold white on grey37",
}

_RUN_ID = re.compile(r"^\d{8}-(\d{6}(?:-\d{3})?-.+)$")  # backend.protocol.paths.new_run_id: date-time-ms-name


def short_run_ids(run_id: str) -> list[str]:
    """The run id, then shorter forms of it (without its date, then its name only)."""
    out = [run_id]
    m = _RUN_ID.match(run_id)
    if m:
        out.append(m.group(1))
        name = m.group(1).split("-", 2)[-1] if m.group(1).count("-") >= 2 else m.group(1).split("-", 1)[-1]
        out.append("…" + (name if len(name) <= 14 else name[:13] + "…"))
    elif len(run_id) > 16:
        out.append(run_id[:15] + "…")
    return out


@dataclass
class Part:
    """One piece of the header: its forms, longest first, and how long it survives (higher
    stays longer). Fitting shortens (then drops) the part with the lowest keep first."""

    forms: list[tuple[str, str]]  # (text, style)
    keep: int
    form: int = 0

    @property
    def text(self) -> tuple[str, str] | None:
        return self.forms[self.form] if self.form < len(self.forms) else None

    def width(self) -> int:
        shown = self.text
        return len(shown[0]) if shown else 0


def fit(parts: list[Part], width: int) -> Text:
    """Shorten / drop parts, least kept first, until the line fits `width` (a part kept at 100 stays)."""
    for part in parts:
        part.form = 0
    order = sorted(range(len(parts)), key=lambda i: parts[i].keep)
    while sum(p.width() for p in parts) > width:
        victim = next((parts[i] for i in order if parts[i].text is not None and parts[i].keep < 100), None)
        if victim is None:
            break
        victim.form += 1
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    for part in parts:
        shown = part.text
        if shown is not None:
            line.append(*shown)
    return line


class RunHeader(Widget):
    """Passive: the screen calls `show(state, ...)`."""

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
        self._parts: list[Part] = [Part([(" rl-console ", "bold reverse")], 100)]
        self._text = Text("rl-console")
        self._fitted_width = -1

    def show(
        self, state: RunState, *, screen_name: str = "", replay: bool = False, read_only: bool = False, replay_at: str = "",
        now: float | None = None,
    ) -> None:
        parts: list[Part] = []
        add = parts.append
        add(Part([(" rl-console ", "bold reverse")], 0))
        lifecycle = state.lifecycle
        if not replay or state.ended:  # replay is no live RUNNING
            badge = f" {lifecycle.upper()} "
            add(Part([(badge, STATE_STYLES.get(lifecycle, "bold"))], 100))
        if state.connection == "disconnected" and lifecycle != "crashed":
            add(Part([(" DISCONNECTED ", "bold white on red"), (" DISCONN ", "bold white on red")], 90))
        elif state.connection == "connecting":
            add(Part([(" connecting… ", "bold yellow")], 80))
        if replay:
            add(Part([(" REPLAY ", "bold black on magenta")], 100))
            if replay_at:
                short = replay_at.split(" (")[0]
                add(Part([(f" {replay_at} ", "bold magenta"), (f" {short} ", "bold magenta")], 85))
        elif read_only:
            add(Part([(" READ-ONLY ", "bold black on grey70"), (" RO ", "bold black on grey70")], 85))
        if not (replay and replay_at):  # the replay position already says the step
            of = f"/{state.max_steps}" if state.max_steps else ""
            add(Part([(f" step {state.step}{of}", "bold"), (f" {state.step}{of}", "bold"), (f" {state.step}", "bold")], 70))
        add(Part([(f"  {fmt_elapsed(state.elapsed_at(now))}", "")], 50))
        add(Part([(f"  {rid}", "bold") for rid in short_run_ids(state.run_id or "…")], 40))
        if screen_name:
            add(Part([(f"  {screen_name}", "bold cyan")], 30))
        add(Part([(f"  weights v{state.weight_version}", ""), (f"  w v{state.weight_version}", "")], 20))
        if state.profile:
            add(Part([(f"  {state.profile}", "dim")], 10))
        if state.model:
            add(Part([(f"  {state.model}", "dim")], 5))
        self._parts = parts
        self._fitted_width = -1  # fitted in render(), to the width it is drawn at
        self.refresh()

    def _fitted(self) -> Text:
        if self._fitted_width != self.size.width:
            self._fitted_width = self.size.width
            self._text = fit(self._parts, self.size.width or 80)
        return self._text

    @property
    def plain(self) -> str:
        return self._fitted().plain

    def render(self) -> Text:
        return self._fitted()
