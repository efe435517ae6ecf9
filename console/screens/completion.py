"""CompletionModal: one completion's full text with its rewards (Enter on a completion).

`t` cycles the token view: the text; each token coloured by the engine's sampling log-prob;
each coloured by |trainer − engine| log-prob (where the trainer's were recorded). In the token
modes ← / → select a token and its values show on the line under the legend.
"""

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
from console.widgets.token_view import least_probable, legend, token_detail, token_text

MODES = ("text", "engine", "gap")


class CompletionModal(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "close", tooltip="close the full text"),
        Binding("enter", "dismiss", "close", show=False),
        Binding("t", "cycle_mode", "tokens", tooltip="token view: text → tokens by engine log-prob → "
                "tokens by |trainer − engine| log-prob"),
        Binding("left", "move_token(-1)", "◀ token", show=False, priority=True, tooltip="token view: previous token"),
        Binding("right", "move_token(1)", "token ▶", show=False, priority=True, tooltip="token view: next token"),
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
    CompletionModal #token-legend { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    CompletionModal #token-legend.-explain { text-wrap: wrap; }
    """

    def __init__(self, group: SampleGroup, index: int) -> None:
        super().__init__()
        self.group, self.index = group, index
        self.mode = "text"
        self.token = 0  # the selected token in the token modes

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
            scroll.border_subtitle = "t: tokens · esc: close"
            yield Static(Text("\n").join([prompt, Text(rewards, style="dim")]), id="completion-meta")
            yield Static(meta)
            yield Static("", id="token-legend")
            yield Static(Text(c.text), id="completion-text")

    # -- the token view ---------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "move_token":  # ← / → scroll as usual in the text mode
            return self.mode != "text"
        return True

    def action_cycle_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self.refresh_bindings()
        self._paint()

    def action_move_token(self, delta: int) -> None:
        tokens = self.group.completions[self.index].tokens
        if tokens:
            self.token = max(0, min(self.token + delta, len(tokens) - 1))
            self._paint()

    def why_no_tokens(self) -> str:
        state = getattr(self.app, "state", None)
        n = getattr(state, "telemetry", {}).get("token_view_groups") if state is not None else None
        per_step = f"telemetry.token_view_groups groups per step (this run: {n})" if n is not None else \
            "telemetry.token_view_groups groups per step"
        return f"no tokens: the token view records {per_step}; this group is not one of them"

    def _paint(self) -> None:
        c = self.group.completions[self.index]
        head = self.query_one("#token-legend", Static)
        body = self.query_one("#completion-text", Static)
        if self.mode == "text":
            head.update("")
            body.update(Text(c.text))
            return
        explain = not c.tokens or (self.mode == "gap" and not c.trainer_logprobs)
        head.set_class(explain, "-explain")  # an explanation wraps; the values stay one line each
        if not c.tokens:
            head.update(Text(f"{self.mode} mode: {self.why_no_tokens()} (t: next mode)", style="yellow"))
            body.update(Text(c.text))
            return
        engine, trainer = c.token_logprobs, c.trainer_logprobs
        lines = [legend(self.mode)]
        if self.mode == "gap" and not trainer:
            lines = [Text("no trainer log-probs for this completion: they are recorded on the steps that measure "
                          "trainer-engine agreement (telemetry.logprob_diff_every); tokens shown dim", style="yellow")]
        lines += [token_detail(c.tokens, engine, trainer, self.token), least_probable(c.tokens, engine)]
        joined = Text("\n").join(lines)
        joined.no_wrap, joined.overflow = True, "ellipsis"  # one line each; ← → move, the values stay put
        head.update(joined)
        body.update(token_text(c.tokens, engine, trainer, self.mode, self.token))
