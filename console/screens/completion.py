"""CompletionModal: one completion's full text with its rewards (Enter on a completion)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.protocol.events import SampleGroup
from console.state import fmt_num


class CompletionModal(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "close", tooltip="close the full text"),
        Binding("enter", "dismiss", "close", show=False),
    ]

    DEFAULT_CSS = """
    CompletionModal { align: center middle; }
    CompletionModal > VerticalScroll {
        width: 90%;
        height: 85%;
        border: round $accent;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    CompletionModal #completion-meta { height: auto; margin-bottom: 1; }
    """

    def __init__(self, group: SampleGroup, index: int) -> None:
        super().__init__()
        self.group, self.index = group, index

    def compose(self) -> ComposeResult:
        g, c = self.group, self.group.completions[self.index]
        meta = Table.grid(padding=(0, 2))
        meta.add_row(
            Text(f"total {c.reward:.3f}", style="bold"),
            Text(f"advantage {c.advantage:+.3f}", style="green" if c.advantage > 0 else "red"),
            f"length {c.length}",
            Text("TRUNCATED", style="bold yellow") if c.truncated else "complete",
            f"weights v{g.weight_version}",
        )
        rewards = "  ".join(f"{k} {fmt_num(v)}" for k, v in c.rewards.items())
        prompt = Text("prompt: ", style="bold").append(g.prompt, style="not bold")
        with VerticalScroll() as scroll:
            scroll.border_title = f"step {g.step} · group {g.group} · completion {self.index} of {len(g.completions)}"
            scroll.border_subtitle = "esc: close"
            yield Static(Text("\n").join([prompt, Text(rewards, style="dim")]), id="completion-meta")
            yield Static(meta)
            yield Static(Text(c.text), id="completion-text")
