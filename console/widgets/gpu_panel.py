"""GpuPanel: per-GPU utilisation, memory, power and temperature, or one short "no GPU" line
(the reason, e.g. NVML's error, is the panel's tooltip and a line in the events log); and the
host's memory at the last step boundary: what the run holds, what a step needed on top of it,
and what is left (the kernel kills a run that asks for more than is left, mid-step)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import GpuStats, HostMemory


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
        self._host: HostMemory | None = None
        self.border_title = "gpu"

    def show(self, stats: GpuStats | None, host: HostMemory | None = None) -> None:
        self._stats = stats
        self._host = host
        self.tooltip = (stats.reason or "no GPU reported") if stats is not None and not stats.available else None
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        s = self._stats
        gpus = 1 if s is None or not s.available else max(len(s.gpus), 1)
        return gpus + (self._host is not None and s is not None and s.available)  # a CPU run's host shares its line

    def _host_text(self) -> Text:
        """'mem 13.7/23.4G free · run 9.1G +5.1G/step': what is left first (a narrow panel cuts the end)."""
        h = self._host
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        if h is None:
            return line
        low = h.available_mb < 0.1 * h.total_mb or (h.step_need_mb is not None and h.available_mb < 1.1 * h.step_need_mb)
        line.append("mem ", style="bold")
        line.append(f"{h.available_mb / 1024:.1f}", style="bold red" if low else "")
        line.append(f"/{h.total_mb / 1024:.1f}G free" + (" (limit)" if h.limit == "cgroup" else ""))
        line.append(f" · run {h.rss_mb / 1024:.1f}G", style="dim")
        if h.step_need_mb is not None:
            line.append(f" +{h.step_need_mb / 1024:.1f}G/step", style="dim")
        return line

    def render(self) -> Text:
        s = self._stats
        if s is None:
            return Text("no GPU report yet", style="dim")
        if not s.available:
            if self._host is not None:  # one line still: the host's memory is what a CPU run runs out of
                return Text.assemble(("no GPU", "bold"), " · ", self._host_text(), no_wrap=True, overflow="ellipsis", end="")
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
        if not lines:
            lines.append(Text("GPU reporting, no devices listed", style="dim"))
        if self._host is not None:
            lines.append(self._host_text())
        return Text("\n").join(lines)
