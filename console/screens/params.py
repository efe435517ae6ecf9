"""Parameters: live values, an edit form validated with the protocol's SetParams, pending/applied/rejected."""

from __future__ import annotations

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from backend.protocol import explain
from backend.protocol.commands import SetParams
from backend.protocol.params import LIVE_PARAMS
from console.screens.base import LiveScreen
from console.state import RunState
from console.widgets.param_form import ParamForm


class ParamsScreen(LiveScreen):
    SCREEN_NAME = "parameters"
    AUTO_FOCUS = "#param-temperature"
    BINDINGS = [Binding("escape", "leave_form", "leave form", tooltip="leave the form so single-key commands work again")]

    def compose_body(self) -> ComposeResult:
        note = self._read_only_note()
        if note:
            self.AUTO_FOCUS = None  # nothing to edit: leave single-key commands working
        with VerticalScroll(id="params-body", can_focus=False):  # scrolls on a short terminal; header and footer stay
            yield Static(
                "Live parameters apply at the next step boundary. Empty fields are left unchanged.",
                id="params-intro",
            )
            yield ParamForm(read_only_note=note, id="param-form")

    def action_leave_form(self) -> None:
        self.set_focus(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_form":  # offered (and its footer room taken) only while in the form
            return self.focused is not None
        return super().check_action(action, parameters)

    def on_param_form_submitted(self, message: ParamForm.Submitted) -> None:
        form = self.query_one(ParamForm)
        if not message.values:
            form.show_error(f"enter a new value in at least one field ({', '.join(LIVE_PARAMS)})")
            return
        # every field's problem at once: the registry's ranges, then this run's limits for the
        # fields within them (an operator fixes the form in one go, not one error at a time)
        errors: list[str] = []
        try:
            command = SetParams(**message.values)
            changes = command.changes()
        except ValidationError as exc:
            errors.append(explain(exc))
            bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
            try:
                changes = SetParams(**{k: v for k, v in message.values.items() if k not in bad}).changes()
            except ValidationError:
                changes = {}
        beyond = self._beyond_run_limits(changes)
        if beyond:  # the registry allows it, this run cannot: say so before sending
            errors.append(beyond)
        if errors:
            form.show_error("; ".join(errors))
            return
        if self.console_app.send_command(command):
            form.show_error("")
            form.clear_inputs()
            self.set_focus(None)  # sent: single-key commands work again (click or tab to edit more)
        else:
            form.show_error("not sent")
        self.console_app.repaint(force=True)

    def _beyond_run_limits(self, changes: dict) -> str:
        limits = self.console_app.state.param_limits()
        beyond = []
        for name, value in changes.items():
            _shown, hi, why = limits[name]
            if hi is not None and value > hi:
                beyond.append(f"{name}: {value} is above this run's limit {hi} ({why})")
        return "; ".join(beyond)

    def _read_only_note(self) -> str:
        app = self.console_app
        if app.replay:
            return "replay: view only"
        if app.state.ended:
            return f"the run {app.state.lifecycle} at step {app.state.step}: nothing to change"
        if app.read_only_requested:
            return "read-only: editing disabled"
        if app.read_only:
            return f"read-only: {app.state.control_holder or 'another console'} controls the run"
        return ""

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        self.query_one(ParamForm).set_read_only(self._read_only_note())
        rejection = state.last_param_rejection()
        note = Text()
        if rejection is not None:
            what = "no answer" if rejection.status == "unanswered" else f"backend {rejection.status}"
            note.append(f"{what} [{rejection.command_id}]: ", style="bold")
            note.append(rejection.reason or "(no reason given)")
        statuses = {name: state.param_status(name) for name in LIVE_PARAMS}
        self.query_one(ParamForm).show_limits(state.param_limits())
        self.query_one(ParamForm).show(state.live_param_values(), statuses, note)
