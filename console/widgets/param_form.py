"""ParamForm: one row per live parameter (current value, new value input, pending/applied status)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Static

from backend.protocol.params import BY_NAME, LIVE_PARAMS, param_range

STATUS_STYLES = {"pending": "bold yellow", "applied": "bold green", "rejected": "bold red", "": ""}


def param_description(name: str) -> str:
    return BY_NAME[name].description


def fmt_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        text = f"{value:.4g}"
        return text if "." in text or "e" in text else text + ".0"
    return str(value)


class ParamForm(Vertical):
    """Passive: the screen calls `show(...)`, `show_error(...)`, `clear_inputs(...)`.

    Enter in any field (or the apply button) posts `Submitted` with every non-empty field.
    """

    DEFAULT_CSS = """
    ParamForm {
        height: auto;
        padding: 0 1;
    }
    ParamForm Grid {
        grid-size: 5;
        grid-columns: 16 11 14 12 1fr;
        grid-gutter: 0 1;
        grid-rows: 1;
        height: auto;
    }
    ParamForm .head { text-style: bold; color: $text-muted; }
    ParamForm Input { width: 100%; }
    ParamForm #param-error { color: $error; text-style: bold; height: auto; margin-top: 1; }
    ParamForm #param-rejection { color: $error; height: auto; }
    ParamForm #param-limits { color: $text-muted; height: auto; }
    ParamForm #param-actions { height: 1; margin-top: 1; }
    ParamForm #param-hint { color: $text-muted; width: 1fr; padding-left: 2; }
    """

    def __init__(self, *, read_only_note: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.read_only_note = read_only_note

    class Submitted(Message):
        def __init__(self, values: dict[str, str]) -> None:
            super().__init__()
            self.values = values

    def compose(self) -> ComposeResult:
        with Grid():
            for head in ("parameter", "range", "current", "new value", "status"):
                yield Label(head, classes="head")
            for name in LIVE_PARAMS:
                yield Label(name, id=f"name-{name}")
                yield Label(param_range(name), classes="range", id=f"range-{name}")
                yield Label("–", id=f"live-{name}")
                yield Input(placeholder="…", compact=True, id=f"param-{name}", tooltip=param_description(name),
                            disabled=bool(self.read_only_note))
                yield Static("", id=f"status-{name}")
        yield Static("", id="param-limits")
        yield Static("", id="param-error")
        yield Static("", id="param-rejection")
        with Horizontal(id="param-actions"):
            yield Button("apply", id="param-apply", compact=True, variant="primary", disabled=bool(self.read_only_note))
            yield Static(self.read_only_note or "Enter applies all filled fields, checked before sending", id="param-hint")

    def show_limits(self, limits: Mapping[str, tuple[str, Any, str]]) -> None:
        """Each field's effective range ('*' = narrowed by this run, with why below the form)."""
        notes = []
        for name in LIVE_PARAMS:
            shown, _hi, why = limits.get(name, (param_range(name), None, ""))
            self.query_one(f"#range-{name}", Label).update(shown)
            if why:
                notes.append(f"* {name}: {why}")
        limits_note = self.query_one("#param-limits", Static)
        limits_note.update(Text("\n".join(notes)))
        limits_note.display = bool(notes)

    def show(self, values: Mapping[str, Any], statuses: Mapping[str, tuple[str, str]], rejection: str) -> None:
        for name in LIVE_PARAMS:
            self.query_one(f"#live-{name}", Label).update(fmt_value(values.get(name)))
            text, level = statuses.get(name, ("", ""))
            self.query_one(f"#status-{name}", Static).update(Text(text, style=STATUS_STYLES.get(level, "")))
        self.query_one("#param-rejection", Static).update(rejection)

    def set_read_only(self, note: str) -> None:
        """Disable editing (with the reason in the hint) or enable it again; no-op if unchanged."""
        if note == self.read_only_note:
            return
        self.read_only_note = note
        for name in LIVE_PARAMS:
            self.query_one(f"#param-{name}", Input).disabled = bool(note)
        self.query_one("#param-apply", Button).disabled = bool(note)
        self.query_one("#param-hint", Static).update(note or "Enter applies all filled fields, checked before sending")

    def show_error(self, message: str) -> None:
        self.query_one("#param-error", Static).update(Text(message))

    def clear_inputs(self) -> None:
        for name in LIVE_PARAMS:
            self.query_one(f"#param-{name}", Input).value = ""

    def values(self) -> dict[str, str]:
        out = {}
        for name in LIVE_PARAMS:
            raw = self.query_one(f"#param-{name}", Input).value.strip()
            if raw:
                out[name] = raw
        return out

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self.values()))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.Submitted(self.values()))
