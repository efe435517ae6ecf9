"""TryForm: the playground's request: a prompt, n, sampling values for this try only, columns.

Sampling fields left empty take the run's live values when the try is served (the form shows
them as placeholders); temperature 0 decodes greedily. Columns are `NAME=VALUE` pairs (quote
a value with spaces) for the dataset columns the run's reward functions read, so the
completions can be scored. Passive: the screen calls `set_live`, `set_prompt`, `show_error`,
`set_note`; Enter in a field (or the button) posts `Submitted`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Static, TextArea

from backend.protocol.params import ENGINE_PARAMS

SAMPLING = ENGINE_PARAMS  # every live parameter that reaches the engine's sampling, from the registry
LABELS = {"temperature": "temp"}  # shorter labels where the name is long; the others show their name
HINT = "empty: live value · temp 0: greedy (n 1) · ^s/Enter: send · ^o: pick a prompt"


def fmt_live(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class TryForm(Vertical):
    DEFAULT_CSS = """
    TryForm { height: auto; padding: 0 1; }
    TryForm #try-prompt { height: 3; min-height: 3; border: none; background: $boost; }
    TryForm .try-row { height: 1; }
    TryForm .try-row Label { width: auto; padding: 0 1 0 0; color: $text-muted; }
    TryForm #try-n { width: 5; margin-right: 1; }
    TryForm .try-sampling { width: 7; margin-right: 1; }
    TryForm #try-columns { width: 1fr; }
    TryForm #try-send { margin-left: 1; min-width: 7; }
    TryForm #try-hint { height: auto; max-height: 2; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._note = ""
        self._error = ""

    class Submitted(Message):
        def __init__(self, prompt: str, values: dict[str, str], columns: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.values = values  # non-empty fields: n and the sampling values, as typed
            self.columns = columns

    def compose(self) -> ComposeResult:
        yield TextArea(id="try-prompt", compact=True, soft_wrap=True, show_line_numbers=False,
                       placeholder="prompt to sample the live engine with (ctrl+o: pick a probe or a recent group's prompt)")
        with Horizontal(classes="try-row"):
            yield Label("n")
            yield Input(value="1", compact=True, id="try-n", tooltip="completions to sample (1-64)")
            for name in SAMPLING:
                yield Label(LABELS.get(name, name))
                yield Input(compact=True, id=f"try-{name}", classes="try-sampling", placeholder="live",
                            tooltip=f"{name} for this try only (empty: the run's live value)")
            yield Button("try", id="try-send", compact=True, variant="primary")
        with Horizontal(classes="try-row"):
            yield Label("columns")
            yield Input(compact=True, id="try-columns", placeholder="NAME=VALUE … the reward functions read (e.g. answer=olleh)")
        yield Static(HINT, id="try-hint")  # the hint, or a note (replay, read-only), or the last error

    # -- fed by the screen --------------------------------------------------------------------
    def set_live(self, live: Mapping[str, Any]) -> None:
        """Show the run's live sampling values as the placeholders of the empty fields."""
        for name in SAMPLING:
            field = self.query_one(f"#try-{name}", Input)
            text = fmt_live(live.get(name)) or "live"
            if field.placeholder != text:
                field.placeholder = text

    def set_prompt(self, prompt: str) -> None:
        area = self.query_one("#try-prompt", TextArea)
        area.load_text(prompt)
        area.focus()
        area.move_cursor(area.document.end)

    def set_note(self, note: str) -> None:
        """A note instead of the hint (replay, read-only): what sending will do."""
        if note != self._note:
            self._note = note
            self._show_hint()

    def show_error(self, message: str) -> None:
        self._error = message
        self._show_hint()

    def _show_hint(self) -> None:
        hint = self.query_one("#try-hint", Static)
        if self._error:
            hint.update(Text(self._error, style="bold red"))
        elif self._note:
            hint.update(Text(self._note, style="bold yellow"))
        else:
            hint.update(Text(HINT))

    @property
    def hint(self) -> str:
        """The line under the fields, as plain text (tests read it)."""
        return self._error or self._note or HINT

    # -- read by the screen -------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        return self.query_one("#try-prompt", TextArea).text

    def values(self) -> dict[str, str]:
        out = {}
        for name in ("n", *SAMPLING):
            raw = self.query_one(f"#try-{name}", Input).value.strip()
            if raw:
                out[name] = raw
        return out

    def submit(self) -> None:
        self.post_message(self.Submitted(self.prompt, self.values(), self.query_one("#try-columns", Input).value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.submit()
