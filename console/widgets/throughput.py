"""ThroughputPanel: tokens/s, samples/s, where the step time goes (a stacked bar), and two
health signals of the batch: trainer-engine log-prob agreement (newest measured step) and
the mean reward of completions that finished vs were truncated at max_tokens."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from backend.protocol.events import COMPILE_SHOWN_S, StepMetrics

LEGEND_ONE_LINE = 56  # cells needed for the legend with full stage names
LEGEND_SHORT = 42  # ... with short names; narrower puts it on two lines
PARTS = (("generate", "gen", "dodger_blue1"), ("score", "scr", "gold1"), ("train", "trn", "green3"), ("sync", "syn", "orchid"))


def stacked_bar(times: dict[str, float], width: int) -> Text:
    total = sum(times.values())
    out = Text(no_wrap=True, end="")
    if total <= 0:
        return out.append("·" * width, style="grey37")
    used = 0
    for i, (name, _, color) in enumerate(PARTS):
        cells = width - used if i == len(PARTS) - 1 else round(times[name] / total * width)
        cells = max(min(cells, width - used), 0)
        out.append("█" * cells, style=color)
        used += cells
    return out


class ThroughputPanel(Widget):
    """Passive: the screen calls `show(metrics)` with the newest StepMetrics (or None)."""

    DEFAULT_CSS = """
    ThroughputPanel {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: auto;
        border: round $primary 60%;
        border-title-color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._metrics: StepMetrics | None = None
        self._gap: tuple[int, float, float] | None = None  # (step, mean, max) of the newest measured step
        self.border_title = "throughput · step time"

    def show(self, metrics: StepMetrics | None) -> None:
        self._metrics = metrics
        if metrics is not None and metrics.logprob_diff_mean is not None:
            self._gap = (metrics.step, metrics.logprob_diff_mean, metrics.logprob_diff_max or 0.0)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        if self._metrics is None:
            return 1
        return 4 if width >= LEGEND_SHORT else 5

    def render(self) -> Text:
        m = self._metrics
        width = max(self.size.width, 8)
        if m is None:
            return Text("no step yet", style="dim")
        t = m.times
        times = {"generate": t.generate, "score": t.score, "train": t.train, "sync": t.sync}
        head = Text(no_wrap=True, overflow="ellipsis", end="")
        compiling = t.compile >= COMPILE_SHOWN_S
        if compiling:  # a compiled update compiled in this step (part of train): said first, not cut off
            head.append(f"compiling {t.compile:.1f}s", style="bold yellow")
            head.append(f" of {t.total:.2f}s/step  ")
        head.append(f"{m.tokens_per_s:,.0f}", style="bold")
        head.append(" tok/s  ")
        head.append(f"{m.samples_per_s:,.1f}", style="bold")
        head.append(" samples/s")
        if not compiling:
            head.append("  ")
            head.append(f"{t.total:.2f}s", style="bold")
            head.append("/step")
        wide = width >= LEGEND_ONE_LINE
        items = [
            Text.assemble(("■", color), f"{name if wide else short} {times[name]:.2f}{'s' if wide else ''}")
            for name, short, color in PARTS
        ]
        if width >= LEGEND_SHORT:
            legend = [Text(" ").join(items)]
            if not wide:
                legend[0].append(" s")
        else:  # two per line
            legend = [Text(" ").join(items[:2]), Text(" ").join(items[2:]).append(" s")]
        return Text("\n").join([head, stacked_bar(times, width), *legend, self._signals(m)])

    def _signals(self, m: StepMetrics) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append("Δlogp ")
        if self._gap is None:
            out.append("–", style="dim")
        else:
            step, mean, worst = self._gap
            out.append(f"{mean:.2g}", style="bold")
            out.append(f" max {worst:.2g} @{step}", style="dim")
        fin = "–" if m.reward_finished is None else f"{m.reward_finished:.2f}"
        trunc = "–" if m.reward_truncated is None else f"{m.reward_truncated:.2f}"
        out.append("  reward ended ")
        out.append(fin, style="bold")
        out.append(" cut ")
        out.append(trunc, style="bold red" if m.reward_truncated is not None and m.reward_finished is not None
                   and m.reward_truncated < m.reward_finished else "bold")
        return out
