"""GpuPanel: per-GPU utilisation, memory, power and temperature, or one short "no GPU" line
(the reason, e.g. NVML's error, is the panel's tooltip and a line in the events log)."""

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
        self.tooltip = (stats.reason or "no GPU reported") if stats is not None and not stats.available else None
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        s = self._stats
        if s is None or not s.available:
            return 1
        return max(len(s.gpus), 1)

    def render(self) -> Text:
        s = self._stats
        if s is None:
            return Text("no GPU report yet", style="dim")
        if not s.available:
            return Text.assemble(("no GPU", "bold"), (" (CPU run)", "dim"), no_wrap=True, overflow="ellipsis", end="")
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
