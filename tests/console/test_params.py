"""Parameters screen: validate with SetParams before sending, pending/applied/rejected."""

from __future__ import annotations

from textual.widgets import Input, Label, Static

from backend.protocol.commands import SetParams
from backend.protocol.events import CommandResult, ParamsApplied
from console.app import RLConsoleApp
from console.screens.params import ParamsScreen


def plain(widget) -> str:
    content = widget.content if isinstance(widget, Static) else widget.renderable
    return getattr(content, "plain", str(content))


async def open_params(kit, pilot, source):
    await kit.settle(pilot, source)
    await pilot.press("e")
    await kit.settle(pilot)
    assert isinstance(pilot.app.screen, ParamsScreen)
    return pilot.app.screen


async def type_into(pilot, field: str, value: str) -> None:
    pilot.app.screen.query_one(f"#param-{field}", Input).focus()
    await pilot.pause()
    await pilot.press(*value)


async def test_live_values_shown(kit):
    source = kit.Source(kit.make_run(steps=6, params_at=5))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        values = {n: plain(screen.query_one(f"#live-{n}", Label)) for n in kit.PARAMS}
        assert values == {"temperature": "0.9", "top_p": "1.0", "top_k": "-1", "max_tokens": "64",
                          "num_generations": "8", "learning_rate": "1.00e-05", "beta": "0.04"}
        text = kit.screen_text(app)
        assert "temperature" in text and "0…2" in text and "learning_rate" in text and ">0…1" in text
        assert lines_fit(text, 80, 24)


def lines_fit(text: str, width: int, height: int) -> bool:
    lines = text.splitlines()
    return len(lines) == height and all(len(line) <= width for line in lines)


async def test_edit_temperature_sends_setparams_then_shows_pending_and_applied(kit):
    source = kit.Source(kit.make_run(steps=3, params_at=None))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        await type_into(pilot, "temperature", "0.7")
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="command sent")
        (command,) = source.sent
        assert isinstance(command, SetParams) and command.changes() == {"temperature": 0.7}
        await kit.wait_for(pilot, lambda: app.state.pending_value("temperature") == (0.7, "accepted"))
        await kit.settle(pilot)
        assert plain(screen.query_one("#status-temperature", Static)) == "pending 0.7 (accepted)"
        assert screen.query_one("#param-temperature", Input).value == ""
        assert ("information", "set_params accepted") in app.status_history
        source.push(ParamsApplied(ts=kit.TS0 + 900, command_id=command.id, step=4, changed={"temperature": 0.7},
                                  params={**kit.PARAMS, "temperature": 0.7}))
        await kit.wait_for(pilot, lambda: not app.state.pending)
        await kit.settle(pilot)
        assert plain(screen.query_one("#status-temperature", Static)) == "applied at step 4"
        assert plain(screen.query_one("#live-temperature", Label)) == "0.7"


async def test_invalid_value_shows_pydantic_message_and_sends_nothing(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        await type_into(pilot, "temperature", "9")
        await pilot.press("enter")
        await kit.settle(pilot)
        error = plain(screen.query_one("#param-error", Static))
        assert error == "temperature: Input should be less than or equal to 2"
        assert error in kit.screen_text(app)
        screen.query_one("#param-temperature", Input).value = ""
        await type_into(pilot, "top_k", "abc")
        await pilot.press("enter")
        await kit.settle(pilot)
        assert "top_k: Input should be a valid integer" in plain(screen.query_one("#param-error", Static))
        screen.query_one("#param-top_k", Input).value = ""
        await pilot.press("enter")  # nothing filled in
        await kit.settle(pilot)
        assert "at least one field" in plain(screen.query_one("#param-error", Static))
        await pilot.pause(0.1)
        assert source.sent == []


async def test_rejection_reason_shown_next_to_form(kit):
    reason = "num_generations must divide the global batch size (32)"

    def reject(command):
        return [CommandResult(ts=kit.TS0 + 900, command_id=command.id, command=command.kind, status="rejected", reason=reason)]

    source = kit.Source(kit.make_run(steps=2), respond=reject)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        await type_into(pilot, "num_generations", "6")
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: bool(app.state.rejections), what="rejection")
        await kit.settle(pilot)
        sent = source.sent[0]
        assert plain(screen.query_one("#param-rejection", Static)) == f"backend rejected [{sent.id}]: {reason}"
        assert plain(screen.query_one("#status-num_generations", Static)) == "rejected: 6"
        assert reason in " ".join(kit.screen_text(app).split())  # it may wrap
        assert ("error", f"set_params rejected: {reason}") in app.status_history
        assert app.state.pending == {}


async def test_read_only_form_is_disabled_and_sends_nothing(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        assert screen.query_one("#param-temperature", Input).disabled
        assert "read-only" in kit.screen_text(app)
        # even if a submit reaches the screen, nothing goes out
        from console.widgets.param_form import ParamForm
        screen.post_message(ParamForm.Submitted({"temperature": "0.5"}))
        await kit.settle(pilot)
        assert source.sent == []
        assert any("read-only" in message for _, message in app.status_history)


async def test_escape_leaves_the_form_so_keys_work_again(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_params(kit, pilot, source)
        assert isinstance(app.focused, Input)
        await pilot.press("d")  # typed into the field
        assert app.current_mode == "params" and app.focused.value == "d"
        await pilot.press("escape", "d")
        await kit.settle(pilot)
        assert app.current_mode == "dashboard" and source.sent == []


async def test_replay_form_is_view_only_and_keys_keep_working(kit):
    source = kit.Source(kit.make_run(steps=2), hold_open=False)
    app = RLConsoleApp(source, replay=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_params(kit, pilot, source)
        assert app.focused is None
        assert all(screen.query_one(f"#param-{n}", Input).disabled for n in kit.PARAMS)
        assert "replay: view only" in kit.screen_text(app)
        await pilot.press("l")
        await kit.settle(pilot)
        assert app.current_mode == "events"


def _run_with_profile(kit, profile_data):
    from backend.protocol.events import RunStarted

    run = kit.make_run(steps=3, params_at=None)
    started = next(e for e in run if isinstance(e, RunStarted))
    run[run.index(started)] = started.model_copy(update={"profile_data": profile_data})
    return run


async def test_ranges_are_this_runs_effective_limits_and_a_value_beyond_them_is_not_sent(kit):
    """max_tokens is bounded by the run's engine.max_model_len (minus the prompt), beta stays 0
    when the run has no reference model; both say why, and a value beyond is refused before
    sending with the reason."""
    source = kit.Source(_run_with_profile(kit, {"engine": {"max_model_len": 512}, "training": {"beta": 0.0}}))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_params(kit, pilot, source)
        assert plain(screen.query_one("#range-max_tokens", Label)) == "1…511*"
        assert plain(screen.query_one("#range-beta", Label)) == "0 only*"
        assert plain(screen.query_one("#range-temperature", Label)) == ">0…2"  # the registry's
        text = " ".join(kit.screen_text(app).split())
        assert "* max_tokens: max_tokens + the longest prompt ≤ engine.max_model_len = 512" in text
        assert "* beta: beta > 0 needs a reference model" in text
        await type_into(pilot, "max_tokens", "600")
        await pilot.press("enter")
        await kit.settle(pilot)
        assert source.sent == []
        assert "max_tokens: 600 is above this run's limit 511" in plain(screen.query_one("#param-error", Static))
        screen.query_one("#param-max_tokens", Input).value = ""
        await type_into(pilot, "beta", "0.1")
        await pilot.press("enter")
        await kit.settle(pilot)
        assert source.sent == [] and "beta: 0.1 is above this run's limit 0" in plain(screen.query_one("#param-error", Static))
        screen.query_one("#param-beta", Input).value = ""
        # three problems at once (out of the registry's range, over the run's limits): all said
        for field, value in (("num_generations", "1"), ("max_tokens", "600"), ("beta", "0.1")):
            await type_into(pilot, field, value)
        await pilot.press("enter")
        await kit.settle(pilot)
        error = plain(screen.query_one("#param-error", Static))
        assert source.sent == [] and "num_generations: Input should be greater than or equal to 2" in error
        assert "max_tokens: 600 is above this run's limit 511" in error and "beta: 0.1 is above this run's limit 0" in error
        for field in ("num_generations", "max_tokens", "beta"):
            screen.query_one(f"#param-{field}", Input).value = ""
        await type_into(pilot, "max_tokens", "200")
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="an in-range value sent")
        assert source.sent[0].changes() == {"max_tokens": 200}


async def test_without_the_runs_profile_the_registry_ranges_are_shown(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_params(kit, pilot, source)
        assert plain(screen.query_one("#range-max_tokens", Label)) == "1…131072"
        assert plain(screen.query_one("#range-beta", Label)) == "0…10"
        assert plain(screen.query_one("#param-limits", Static)) == ""


async def test_the_runs_longest_prompt_makes_the_max_tokens_limit_exact(kit):
    run = _run_with_profile(kit, {"engine": {"max_model_len": 512}})
    started = next(e for e in run if e.kind == "run_started")
    run[run.index(started)] = started.model_copy(update={"max_prompt_tokens": 40})
    source = kit.Source(run)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_params(kit, pilot, source)
        assert plain(screen.query_one("#range-max_tokens", Label)) == "1…472*"
        text = " ".join(kit.screen_text(app).split())
        assert "max_tokens + the longest prompt (40 tokens) ≤ engine.max_model_len = 512" in text
        await type_into(pilot, "max_tokens", "473")
        await pilot.press("enter")
        await kit.settle(pilot)
        assert source.sent == [] and "max_tokens: 473 is above this run's limit 472" in plain(screen.query_one("#param-error", Static))
