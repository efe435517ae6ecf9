"""Playground (`g`): try a prompt on the live engine at its current weights.

Type a prompt (or ctrl+o: pick a probe prompt or a recent sample group's), set n and, for
this try only, temperature / top_p / top_k / max_tokens (empty: the run's live values, shown
as placeholders; temperature 0 decodes greedily) and the dataset columns the reward
functions read (NAME=VALUE). ctrl+s (or Enter in a field) sends a `try` command through the
app's one send path: a replay or a read-only console is refused there with its usual
message. The backend serves it at the next step boundary and answers with a `try_result`:
its completions, tagged with the weight version they came from, scored by the run's reward
functions. The history lists this console's tries (waiting, refused) and every try in the
run's log, other consoles' and scripts' (`rl-console ctl RUN try`) too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.protocol import explain
from backend.protocol.commands import TryPrompt, parse_columns
from backend.protocol.events import TryResult
from console.screens.base import LiveScreen
from console.state import RunState, fmt_num
from console.widgets.prompt_list import PromptList
from console.widgets.rows import group_label
from console.widgets.try_completions import TryCompletions
from console.widgets.try_form import TryForm
from console.widgets.try_history import TryHistory, TryRow

#: this console's tries kept for the history (answered ones stay in RunState.tries)
MAX_MINE = 50


def try_status(state: RunState, command_id: str) -> tuple[str, str]:
    """(status, reason) of a try this console sent: done, sent/accepted (waiting), or refused."""
    if state.try_result(command_id) is not None:
        return "done", ""
    pending = state.pending.get(command_id)
    if pending is not None:
        return pending.status, ""
    for rejection in reversed(state.rejections):
        if rejection.command_id == command_id:
            return rejection.status, rejection.reason
    return "unanswered", "no try_result came back"


def history_rows(state: RunState, mine: dict[str, TryPrompt]) -> list[TryRow]:
    """This console's tries without an answer (newest first), then every answered try, newest first."""
    rows = []
    for cid, command in reversed(mine.items()):
        status, _ = try_status(state, cid)
        if status != "done":
            rows.append(TryRow(cid, True, status, command.prompt, n=command.n))
    for t in reversed(state.tries):
        mean = sum(c.reward for c in t.completions) / len(t.completions) if t.completions else None
        rows.append(TryRow(t.command_id, t.command_id in mine or state.is_ours(t.command_id), "done", t.prompt,
                           t.weight_version, t.step, len(t.completions), mean))
    return rows


def pick_list(state: RunState, limit: int = 40) -> list[tuple[str, str]]:
    """(where from, prompt): the probe prompts, then the newest groups' distinct prompts."""
    out: list[tuple[str, str]] = [("probe", p) for p in state.probe_prompts()]
    seen = {p for _, p in out}
    for g in reversed(state.groups):
        if len(out) >= limit:
            break
        if g.prompt not in seen:
            seen.add(g.prompt)
            out.append((group_label(g.step, g.group), g.prompt))
    return out


def fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class PromptPicker(ModalScreen[str | None]):
    """ctrl+o on the playground: choose a prompt (Enter), or esc."""

    BINDINGS = [Binding("escape", "dismiss(None)", "close", tooltip="close without picking")]
    DEFAULT_CSS = """
    PromptPicker { align: center middle; }
    PromptPicker > Vertical {
        width: 90%; height: 80%; border: round $accent; background: $surface;
        border-title-color: $text; border-subtitle-color: $text-muted;
    }
    PromptPicker #pick-empty { height: auto; padding: 1; color: $text-muted; }
    """

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "pick a prompt"
            box.border_subtitle = "enter: use it · esc: close"
            if not self.rows:
                yield Static("No prompts yet: the probe prompts and the sample groups' prompts show here as they arrive.",
                             id="pick-empty")
            yield PromptList(id="pick-list")

    def on_mount(self) -> None:
        plist = self.query_one(PromptList)
        plist.set_prompts(self.rows, max(self.app.size.width * 9 // 10 - 20, 20))
        plist.focus()

    def on_prompt_list_picked(self, message: PromptList.Picked) -> None:
        self.dismiss(message.prompt)


class PlaygroundScreen(LiveScreen):
    SCREEN_NAME = "playground"
    AUTO_FOCUS = "#try-prompt"
    BINDINGS = [
        Binding("ctrl+s", "send", "send", tooltip="send the try: the prompt on the live engine, at its current weights"),
        Binding("ctrl+o", "pick", "pick prompt", tooltip="pick a prompt: the probe prompts and recent sample groups'"),
        Binding("escape", "leave_form", "leave form", tooltip="leave the form so single-key commands work again"),
    ]
    DEFAULT_CSS = """
    PlaygroundScreen #play-body { height: 1fr; layout: vertical; border-top: solid $primary 50%; }
    PlaygroundScreen #try-history { height: 4; min-height: 3; }
    PlaygroundScreen #play-result { height: 1fr; }
    PlaygroundScreen #try-detail { height: 2; background: $boost; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    PlaygroundScreen #try-completions { height: auto; max-height: 7; min-height: 2; }
    PlaygroundScreen #try-text-scroll { height: 1fr; padding: 0 1; border-top: solid $primary 30%; }
    PlaygroundScreen.-wide #play-body { layout: horizontal; }
    PlaygroundScreen.-wide #try-history { width: 1fr; height: 100%; }
    PlaygroundScreen.-wide #play-result { width: 1fr; height: 100%; border-left: solid $primary 50%; }
    PlaygroundScreen.-wide #try-completions { max-height: 12; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.mine: OrderedDict[str, TryPrompt] = OrderedDict()
        self.selected: str | None = None  # the try shown (command id)
        self.completion = 0  # the completion whose full text is shown

    def compose_body(self) -> ComposeResult:
        yield TryForm(id="try-form")
        with Container(id="play-body"):
            yield TryHistory(id="try-history")
            with Vertical(id="play-result"):
                yield Static("", id="try-detail")
                yield TryCompletions(id="try-completions")
                with VerticalScroll(id="try-text-scroll"):
                    yield Static("", id="try-text")

    # -- intent ---------------------------------------------------------------------------------
    def action_leave_form(self) -> None:
        self.set_focus(None)

    def action_send(self) -> None:
        self.query_one(TryForm).submit()

    def action_pick(self) -> None:
        def picked(prompt: str | None) -> None:
            if prompt:
                self.query_one(TryForm).set_prompt(prompt)

        self.app.push_screen(PromptPicker(pick_list(self.console_app.state)), picked)

    def on_try_form_submitted(self, message: TryForm.Submitted) -> None:
        form = self.query_one(TryForm)
        if not message.prompt.strip():
            form.show_error("type a prompt first (or ctrl+o to pick one)")
            return
        try:
            columns = parse_columns(message.columns)
            command = TryPrompt(prompt=message.prompt, columns=columns, **message.values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            form.show_error(explain(exc) if isinstance(exc, ValidationError) else str(exc))
            return
        if not self.console_app.send_command(command):  # replay, read-only, ended, disconnected: it said why
            form.show_error("not sent: " + self.console_app.status[0])
            return
        form.show_error("")
        self.mine[command.id] = command
        while len(self.mine) > MAX_MINE:
            self.mine.popitem(last=False)
        self.selected, self.completion = command.id, 0
        self.console_app.repaint(force=True)
        self.call_after_refresh(self.query_one(TryHistory).select, command.id)

    def on_try_history_highlighted(self, message: TryHistory.Highlighted) -> None:
        self.selected, self.completion = message.command_id, 0
        self.console_app.repaint(force=True)

    def on_try_history_opened(self, message: TryHistory.Opened) -> None:
        """Enter on a try: its prompt back in the form, to try again or edit."""
        state = self.console_app.state
        result = state.try_result(message.command_id)
        prompt = result.prompt if result is not None else getattr(self.mine.get(message.command_id), "prompt", "")
        if prompt:
            self.query_one(TryForm).set_prompt(prompt)

    def on_try_completions_highlighted(self, message: TryCompletions.Highlighted) -> None:
        self.completion = message.index
        self.console_app.repaint(force=True)

    # -- painting -------------------------------------------------------------------------------
    def _note(self) -> str:
        refused = self.console_app.refusal("try")
        return refused[1] if refused else ""

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        form = self.query_one(TryForm)
        form.set_live(state.live_params)
        form.set_note(self._note())
        rows = history_rows(state, self.mine)
        history = self.query_one(TryHistory)
        history.set_rows(rows, max((history.size.width or self.size.width) - TryHistory.fixed_width(), 12))
        if self.selected not in {r.command_id for r in rows}:
            self.selected = rows[0].command_id if rows else None
        self._show_try(state, next((r for r in rows if r.command_id == self.selected), None))

    def _show_try(self, state: RunState, row: TryRow | None) -> None:
        detail = self.query_one("#try-detail", Static)
        table = self.query_one(TryCompletions)
        text = self.query_one("#try-text", Static)
        width = (table.size.width or self.size.width) - TryCompletions.fixed_width(state.reward_functions)
        result: TryResult | None = state.try_result(row.command_id) if row is not None else None
        if row is None or result is None:
            table.set_completions(row.command_id if row else "", [], state.reward_functions, max(width, 12))
            if row is None:
                detail.update(Text("no tries yet", style="dim"))
                text.update(Text("Type a prompt above and press ctrl+s (or Enter in a field) to sample the live engine "
                                 "at its current weights. Tries from other consoles and `rl-console ctl RUN try` show "
                                 "here too.", style="dim"))
                return
            status, reason = try_status(state, row.command_id)
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            if status in ("sent", "accepted"):
                line.append("waiting: ", style="bold yellow")
                line.append("served at the next step boundary (within ~0.5 s while paused)")
            else:
                line.append(f"{status}: ", style="bold red")
                line.append(reason or "no reason given")
            detail.update(line)
            text.update(Text("prompt: ", style="bold").append(row.prompt, style="not bold"))
            return
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(f"weights v{result.weight_version}", style="bold")
        line.append(" · " + ("yours" if row.mine else "another console's / ctl's"))
        n = len(result.completions)
        line.append(f" · after step {result.step} · {n} completion{'' if n == 1 else 's'} in {result.duration_s:.2f}s\n")
        line.append(fmt_params(result.params), style="dim")
        detail.update(line)
        table.set_completions(result.command_id, result.completions, state.reward_functions, max(width, 12))
        if not result.completions:
            text.update(Text("no completions", style="dim"))
            return
        i = min(self.completion, len(result.completions) - 1)
        c = result.completions[i]
        scored = "  ".join(f"{k} {fmt_num(v)}" for k, v in c.rewards.items())
        body = Text()
        body.append(f"completion {i} · total {c.reward:.3f} · {c.length} tokens", style="bold")
        if c.truncated:
            body.append(" · cut at max_tokens", style="bold yellow")
        body.append(" · " + (scored or "not scored") + "\n", style="dim")
        for name, why in result.unscored.items():
            body.append(f"{name} not scored: {why}\n", style="yellow")
        body.append(c.text)
        text.update(body)
