"""GpuPanel: per-GPU utilisation, memory, power and temperature, or a plain "CPU run" line."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import GpuStats


def _util_style(pct: float) -> str:
    return "bold green" if pct >= 70 else "bold yellow" if pct >= 30 else "bold red"


class GpuPanel(Widget):
    """Passive: the screen calls `show(stats)` with the newest GpuStats (or None)."""

    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        max-height: 10;
        border: round $primary 60%;
        border-title-color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stats: GpuStats | None = None
        self.border_title = "gpu"

    def show(self, stats: GpuStats | None) -> None:
        self._stats = stats
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        s = self._stats
        if s is None:
            return 1
        if not s.available:
            return 1 + -(-len(self._reason_text()) // max(width, 1))
        return max(len(s.gpus), 1)

    def _reason_text(self) -> str:
        return f"({self._stats.reason or 'unavailable'})" if self._stats is not None else ""

    def render(self) -> Text:
        s = self._stats
        if s is None:
            return Text("no GPU report yet", style="dim")
        if not s.available:
            return Text.assemble(("CPU run — no GPU", "bold"), "\n", (self._reason_text(), "dim"))
        lines = []
        for g in s.gpus:
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"#{g.index} ", style="bold")
            line.append(f"{g.util_pct:3.0f}%", style=_util_style(g.util_pct))
            line.append(f" mem {g.mem_used_mb / 1024:.1f}/{g.mem_total_mb / 1024:.0f}G")
            if g.power_w is not None:
                line.append(f" {g.power_w:.0f}W")
            if g.temperature_c is not None:
                line.append(f" {g.temperature_c:.0f}°C", style="bold red" if g.temperature_c >= 85 else "")
            line.append(f" {g.name}", style="dim")
            if g.node != "local":
                line.append(f" @{g.node}", style="dim")
            lines.append(line)
        return Text("\n").join(lines) if lines else Text("GPU reporting, no devices listed", style="dim")
