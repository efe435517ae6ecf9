"""Playground (`g`): TryResult events in RunState (pure), the screen driven through Pilot with real
protocol commands and events, snapshots at 80x24 and 160x48. The columns' parsing, shared with
`ctl try --column`, is tested in tests/unit/test_try_columns.py.

Update snapshots after an intended visual change with:
pytest tests/console/test_playground.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea

from backend.protocol.commands import SetParams, TryPrompt
from backend.protocol.events import CommandResult, Completion, PolicyProbe, ProbeOutput, TryResult
from console.app import RLConsoleApp
from console.screens.playground import PlaygroundScreen, PromptPicker, history_rows, pick_list, try_status
from console.state import RunState, describe
from console.widgets.try_completions import TryCompletions
from console.widgets.try_form import TryForm
from console.widgets.try_history import TryHistory

PROMPT = "Reverse the word 'hello'. Answer with the reversed word only."
TEXTS = ("olleh", "ollhe", "Let me think: h, e, l, l, o reversed is olleh")


def completions(columns: dict, n: int) -> list[Completion]:
    """Scored as the demo task's functions would: only when the `answer` column is given."""
    out = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        answer = columns.get("answer")
        if answer is None:
            rewards = {"char_match": None, "first_char": None}
        else:
            rewards = {"char_match": round(sum(a == b for a, b in zip(text, answer)) / len(answer), 3),
                       "first_char": 1.0 if text[:1] == answer[:1] else 0.0}
        total = sum(v for v in rewards.values() if v is not None)
        out.append(Completion(text=text, rewards=rewards, reward=round(total, 3), advantage=0.0,
                              length=len(text.split()) + 2, truncated=len(text) > 40))
    return out


def result_for(command: TryPrompt, ts: float, *, weight_version: int = 24, step: int = 24) -> TryResult:
    params = {"temperature": 0.9, "top_p": 1.0, "top_k": -1, "max_tokens": 64, **command.overrides()}
    return TryResult(ts=ts, command_id=command.id, step=step, weight_version=weight_version, prompt=command.prompt,
                     params=params, completions=completions(dict(command.columns), command.n), duration_s=0.84,
                     unscored={} if command.columns else {f: "raised KeyError: 'answer'; the request gave no answer"
                                                          for f in ("char_match", "first_char")})


def answered(kit):
    """A backend that accepts a try, serves it and says applied (as backend/training/step.py does)."""
    def respond(command):
        ts = kit.TS0 + 900
        if isinstance(command, TryPrompt):
            return [CommandResult(ts=ts, command_id=command.id, command="try", status="accepted"),
                    result_for(command, ts + 1),
                    CommandResult(ts=ts + 1, command_id=command.id, command="try", status="applied", step=24)]
        return kit.Source.accept(command)
    return respond


def accepted_only(command):
    return [CommandResult(ts=1_700_000_900.0, command_id=command.id, command=command.kind, status="accepted")]


def rejected(command):
    return [CommandResult(ts=1_700_000_900.0, command_id=command.id, command=command.kind, status="rejected",
                          reason="prompt (40 tokens) + max_tokens 4096 exceeds engine.max_model_len 2048")]


# -- state and parsing (pure) -------------------------------------------------------------------

def test_tries_are_kept_bounded_and_described():
    state = RunState(max_tries=3)
    commands = [TryPrompt(prompt=f"p{i}", n=2, columns={"answer": "x"}) for i in range(5)]
    for i, c in enumerate(commands):
        state.apply(result_for(c, 1000.0 + i))
    assert [t.prompt for t in state.tries] == ["p2", "p3", "p4"]
    assert state.try_result(commands[4].id).weight_version == 24 and state.try_result(commands[0].id) is None
    text, level = describe(state.tries[-1])
    assert text.startswith(f"try [{commands[4].id}] at weights v24 (step 24): 2 completion(s), mean reward") and level == "info"


def test_a_try_goes_sent_accepted_done_or_refused_and_other_consoles_tries_are_listed():
    state = RunState()
    ok, refused, other = TryPrompt(prompt="a"), TryPrompt(prompt="b", n=3), TryPrompt(prompt="c")
    mine = {ok.id: ok, refused.id: refused}
    state.record_sent(ok)
    state.record_sent(refused)
    assert try_status(state, ok.id) == ("sent", "")
    state.apply(CommandResult(command_id=ok.id, command="try", status="accepted"))
    state.apply(CommandResult(command_id=refused.id, command="try", status="rejected", reason="too long"))
    assert try_status(state, ok.id) == ("accepted", "") and try_status(state, refused.id) == ("rejected", "too long")
    assert [(r.prompt, r.status, r.mine) for r in history_rows(state, mine)] == [("b", "rejected", True), ("a", "accepted", True)]
    state.apply(result_for(ok, 10.0))
    state.apply(CommandResult(command_id=ok.id, command="try", status="applied"))
    state.apply(result_for(other, 11.0, weight_version=25))
    rows = history_rows(state, mine)
    assert [(r.prompt, r.status, r.mine, r.weight_version) for r in rows] == [
        ("b", "rejected", True, None), ("c", "done", False, 25), ("a", "done", True, 24)]
    assert rows[2].n == 1 and rows[2].mean == 0.0  # no `answer` column: nothing scored


# -- the screen (Pilot) -------------------------------------------------------------------------

async def type_prompt(pilot, app, text: str) -> None:
    """Type into the prompt field (it has the focus when the playground opens)."""
    assert isinstance(app.focused, TextArea)
    await pilot.press(*["space" if ch == " " else ch for ch in text])


async def fill(pilot, app, field: str, value: str) -> None:
    app.screen.query_one(f"#try-{field}", Input).focus()
    await pilot.pause()
    await pilot.press("ctrl+a", "ctrl+k", *["space" if ch == " " else ch for ch in value])  # home, clear to the end, type


async def test_g_type_a_prompt_send_a_try_and_see_its_scored_completions(kit):
    source = kit.Source(kit.make_run(steps=24), respond=accepted_only)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        assert isinstance(app.screen, PlaygroundScreen)
        # the live values (temperature 0.9 since step 5) are what an empty field means
        assert app.screen.query_one("#try-temperature", Input).placeholder == "0.9"
        assert app.screen.query_one("#try-max_tokens", Input).placeholder == "64"
        await type_prompt(pilot, app, "Reverse hello")
        await fill(pilot, app, "n", "3")
        await fill(pilot, app, "temperature", "0")
        await fill(pilot, app, "columns", "answer=olleh")
        await pilot.press("ctrl+s")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="try sent")
        command = source.sent[0]
        assert isinstance(command, TryPrompt)
        assert (command.prompt, command.n, command.temperature, command.top_p, command.columns) == (
            "Reverse hello", 3, 0.0, None, {"answer": "olleh"})
        await kit.wait_for(pilot, lambda: try_status(app.state, command.id)[0] == "accepted")
        await kit.settle(pilot)
        history = app.screen.query_one(TryHistory)
        assert history.get_row_at(0)[0] == "you" and history.get_row_at(0)[5] == "waiting"
        assert "waiting: served at the next step boundary" in kit.screen_text(app)

        source.push(result_for(command, kit.TS0 + 901),
                    CommandResult(ts=kit.TS0 + 901, command_id=command.id, command="try", status="applied", step=24))
        await kit.wait_for(pilot, lambda: app.state.try_result(command.id) is not None)
        await kit.settle(pilot)
        assert history.row_count == 1 and history.get_row_at(0)[:6] == ["you", "v24", "24", "3", "1.200", "done"]
        table = app.screen.query_one(TryCompletions)
        assert table.column_labels == ("#", "total", "char_match", "first_char", "len", "cut", "text")
        assert [table.get_row_at(r)[:4] for r in range(3)] == [
            ["0", "2.000", "1.000", "1.000"], ["1", "1.600", "0.600", "1.000"], ["2", "0.000", "0.000", "0.000"]]
        text = kit.screen_text(app)
        assert "weights v24 · yours · after step 24 · 3 completions in 0.84s" in text and "temperature=0 top_p=1" in text
        assert "completion 0 · total 2.000" in text
        table.focus()
        await pilot.press("down", "down")
        await kit.settle(pilot)
        assert "Let me think: h, e, l, l, o reversed is olleh" in kit.screen_text(app)
        assert ("information", "try accepted") in app.status_history


async def test_unscored_without_columns_and_tries_of_other_consoles_show_too(kit):
    source = kit.Source(kit.make_run(steps=24), respond=answered(kit))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await type_prompt(pilot, app, "hi")
        await pilot.press("ctrl+s")
        await kit.wait_for(pilot, lambda: len(app.state.tries) == 1, what="try answered")
        await kit.settle(pilot)
        table = app.screen.query_one(TryCompletions)
        assert table.get_row_at(0)[:4] == ["0", "0.000", "–", "–"]  # the reward functions had no `answer`
        assert "char_match –  first_char –" in kit.screen_text(app)
        assert "char_match not scored: raised KeyError: 'answer'" in kit.screen_text(app)  # and why
        other = TryPrompt(prompt=PROMPT, n=2, columns={"answer": "olleh"})
        source.push(result_for(other, kit.TS0 + 950, weight_version=25, step=25))
        await kit.wait_for(pilot, lambda: len(app.state.tries) == 2)
        await kit.settle(pilot)
        history = app.screen.query_one(TryHistory)
        assert [history.get_row_at(r)[:2] for r in range(2)] == [["other", "v25"], ["you", "v24"]]
        assert history.cursor_row == 1  # it stays on the try shown
        app.set_focus(None)
        history.focus()
        await pilot.press("up")
        await kit.settle(pilot)
        assert "weights v25 · another console's / ctl's · after step 25" in kit.screen_text(app)
        await pilot.press("enter")  # its prompt back in the form
        await kit.settle(pilot)
        assert app.screen.query_one(TryForm).prompt == PROMPT and isinstance(app.focused, TextArea)


@pytest.mark.parametrize("field, value, error", [
    ("temperature", "5", "temperature: Input should be less than or equal to 2"),
    ("n", "0", "n: Input should be greater than or equal to 1"),
    ("top_k", "abc", "top_k: Input should be a valid integer"),
    ("columns", "answer", "columns: 'answer' is not NAME=VALUE"),
    ("columns", "answer=1 answer=2", "columns: 'answer' is given twice"),
])
async def test_bad_values_are_explained_and_nothing_is_sent(kit, field, value, error):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await type_prompt(pilot, app, "hi")
        await fill(pilot, app, field, value)
        await pilot.press("enter")
        await kit.settle(pilot)
        assert source.sent == []
        assert app.screen.query_one(f"#try-{field}", Input).value == value  # kept, to be corrected
        assert error in app.screen.query_one(TryForm).hint
        assert error in " ".join(kit.screen_text(app).split())


async def test_an_empty_prompt_is_not_sent(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await pilot.press("ctrl+s")
        await kit.settle(pilot)
        assert source.sent == [] and "type a prompt first" in app.screen.query_one(TryForm).hint


async def test_a_rejected_try_says_why(kit):
    source = kit.Source(kit.make_run(steps=3), respond=rejected)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await type_prompt(pilot, app, "hi")
        await fill(pilot, app, "max_tokens", "4096")
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: any(r.status == "rejected" for r in app.state.rejections))
        await kit.settle(pilot)
        assert source.sent[0].max_tokens == 4096
        assert app.screen.query_one(TryHistory).get_row_at(0)[5] == "rejected"
        text = " ".join(kit.screen_text(app).split())
        assert "rejected: prompt (40 tokens) + max_tokens 4096 exceeds engine.max_model_len 2048" in text
        assert app.status_history[-1] == ("error", "try rejected: prompt (40 tokens) + max_tokens 4096 exceeds engine.max_model_len 2048")
        # the params form's "last rejection" is about set_params only
        assert app.state.last_param_rejection() is None


@pytest.mark.parametrize("kw, message", [
    ({"replay": True}, "replay: try not sent (commands are off while replaying)"),
    ({"read_only": True}, "read-only: try not sent"),
])
async def test_replay_and_read_only_are_refused_with_the_apps_messages(kit, kw, message):
    events = kit.make_run(steps=3)
    other = TryPrompt(prompt=PROMPT, n=2, columns={"answer": "olleh"})
    events.append(result_for(other, kit.TS0 + 100, weight_version=3, step=3).model_copy(update={"seq": len(events)}))
    source = kit.Source(events, hold_open=not kw.get("replay"))
    app = RLConsoleApp(source, **kw)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        assert message in app.screen.query_one(TryForm).hint  # said before anything is typed
        assert app.screen.query_one(TryHistory).get_row_at(0)[:2] == ["other", "v3"]  # the log's tries still show
        await type_prompt(pilot, app, "hi")
        await pilot.press("ctrl+s")
        await kit.settle(pilot)
        assert source.sent == [] and app.status_history[-1] == ("warning", message)
        assert "not sent: " + message in app.screen.query_one(TryForm).hint


async def test_ctrl_o_picks_a_probe_or_a_recent_group_prompt(kit):
    events = kit.make_run(steps=3)
    probe_prompt = "Reverse the word 'probe'. Answer with the reversed word only."
    events.append(PolicyProbe(seq=len(events), ts=kit.TS0 + 100, step=0, weight_version=0, probes=[
        ProbeOutput(prompt=probe_prompt, output="eborp", rewards={"char_match": 1.0}, reward=1.0, length=2, truncated=False)]))
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        rows = pick_list(app.state)
        assert rows[0] == ("probe", probe_prompt) and rows[1][0] == "s3 g3"
        assert len({p for _, p in rows}) == len(rows)  # each prompt once
        await pilot.press("g")
        await kit.settle(pilot)
        await pilot.press("ctrl+o")
        await kit.settle(pilot)
        assert isinstance(app.screen, PromptPicker)
        await pilot.press("down", "enter")
        await kit.settle(pilot)
        assert isinstance(app.screen, PlaygroundScreen)
        assert app.screen.query_one(TryForm).prompt == rows[1][1]
        await pilot.press("ctrl+o")
        await kit.settle(pilot)
        await pilot.press("escape")  # closes without changing the prompt
        await kit.settle(pilot)
        assert isinstance(app.screen, PlaygroundScreen) and app.screen.query_one(TryForm).prompt == rows[1][1]


async def test_escape_leaves_the_form_so_keys_work_and_params_edits_are_unaffected(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 34)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await type_prompt(pilot, app, "dse")  # typed, not screen switches
        assert app.current_mode == "playground" and app.screen.query_one(TryForm).prompt == "dse"
        footer = app.screen.query_one("KeyFooter")
        assert "^s send" in footer.plain and "p pause" not in footer.plain  # p would type here: no hint for it
        await pilot.press("escape")
        await kit.settle(pilot)
        assert "p pause" in footer.plain
        await pilot.press("v")
        await kit.settle(pilot)
        assert app.current_mode == "probes"
        await pilot.press("g")
        await kit.settle(pilot)
        assert app.screen.query_one(TryForm).prompt == "dse"  # the draft is kept
        assert not any(isinstance(c, SetParams) for c in source.sent)


# -- snapshots --------------------------------------------------------------------------------

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_playground(snap_compare, kit, size):
    source = kit.Source(kit.make_run(steps=24), respond=answered(kit))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        app.screen.query_one("#try-prompt", TextArea).load_text(PROMPT)
        await fill(pilot, app, "n", "3")
        await fill(pilot, app, "columns", "answer=olleh")
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: len(app.state.tries) == 1, what="try answered")
        await pilot.press("escape")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_playground_empty(snap_compare, kit, size):
    source = kit.Source(kit.make_run(steps=24))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("g")
        await kit.settle(pilot)
        await pilot.press("escape")  # out of the prompt field: its blinking cursor would make the snapshot random
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
