"""StopModal: stop the run from the console, after saying what stopping does.

A stop applies at the next step boundary. With a checkpoint first (the default, `y`), the run
can be continued later from that step; without one (`!`), the steps since the last
checkpoint are lost. `esc` keeps the run going. The dialog returns True / False (checkpoint
or not) or None (cancelled).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class StopModal(ModalScreen[bool | None]):
    BINDINGS = [
        Binding("y", "choose(True)", "stop, checkpoint first", tooltip="save a checkpoint, then stop"),
        Binding("exclamation_mark", "choose(False)", "stop, no checkpoint", tooltip="stop without a checkpoint"),
        Binding("escape", "choose(None)", "cancel", tooltip="keep the run going"),
    ]

    DEFAULT_CSS = """
    StopModal { align: center middle; }
    StopModal > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $error;
        border-title-color: $text;
        background: $surface;
        padding: 0 1;
    }
    StopModal #stop-text { height: auto; }
    StopModal Horizontal { height: auto; margin-top: 1; }
    StopModal Button { margin-right: 1; }
    """

    def __init__(self, run_id: str, step: int, last_checkpoint: int | None) -> None:
        super().__init__()
        self.run_id, self.step, self.last_checkpoint = run_id, step, last_checkpoint

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "stop the run"
            yield Static(self._text(), id="stop-text")
            with Horizontal():
                yield Button("stop, checkpoint first", id="stop-checkpoint", variant="error", compact=True)
                yield Button("stop, no checkpoint", id="stop-now", compact=True)
                yield Button("cancel", id="stop-cancel", variant="primary", compact=True)

    def follow(self, step: int, last_checkpoint: int | None) -> None:
        """The run goes on while the dialog is open: keep its step (and last checkpoint) current."""
        if (step, last_checkpoint) != (self.step, self.last_checkpoint):
            self.step, self.last_checkpoint = step, last_checkpoint
            self.query_one("#stop-text", Static).update(self._text())

    def _text(self) -> Text:
        since = f"step {self.last_checkpoint}" if self.last_checkpoint is not None else "the start (no checkpoint yet)"
        text = Text()
        text.append(f"Stop {self.run_id or 'this run'} at the next step boundary (now step {self.step}, still training)?\n\n",
                    style="bold")
        text.append(" y ", style="bold reverse")
        text.append(f" save a checkpoint first, then stop; continue later with rl-console run --resume {self.run_id or 'RUN'}\n")
        text.append(" ! ", style="bold reverse")
        text.append(f" stop without a checkpoint: the steps since {since} are lost\n")
        text.append(" esc ", style="bold reverse")
        text.append(" keep the run going")
        return text

    def on_mount(self) -> None:
        self.query_one("#stop-cancel", Button).focus()  # Enter on its own never stops a run

    def action_choose(self, checkpoint: bool | None) -> None:
        self.dismiss(checkpoint)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss({"stop-checkpoint": True, "stop-now": False}.get(event.button.id or ""))
