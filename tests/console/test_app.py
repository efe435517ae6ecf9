"""App-level keys, commands, toasts, read-only/replay, disconnects, help, events log, palette."""

from __future__ import annotations

import re

import pytest
from textual.widgets import Input

from backend.protocol.commands import Checkpoint, Pause, Resume, ResyncWeights, Stop
from backend.protocol.events import Alert, CommandResult, StateChanged
from console import textual_compat
from console.app import PALETTE, RLConsoleApp
from console.screens.events import EventsScreen
from console.screens.help import HelpScreen
from console.widgets.event_log import EventLog
from console.widgets.groups_table import GroupsTable
from tests.conftest import make_run_files


async def test_p_sends_pause_when_running_and_resume_when_paused(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("p")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1)
        assert isinstance(source.sent[0], Pause)
        await kit.wait_for(pilot, lambda: ("information", "pause accepted") in app.status_history, what="toast")
        source.push(StateChanged(ts=kit.TS0 + 100, state="paused", step=3, reason="operator"))
        await kit.wait_for(pilot, lambda: app.state.state == "paused")
        await kit.settle(pilot)
        assert "PAUSED" in kit.screen_text(app).splitlines()[0]
        await pilot.press("p")
        await kit.wait_for(pilot, lambda: len(source.sent) == 2)
        assert isinstance(source.sent[1], Resume)
        assert any(m.kind == "pause" and m.step == 3 for m in app.state.markers)


async def test_w_and_c_send_resync_and_checkpoint(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("w", "c")
        await kit.wait_for(pilot, lambda: len(source.sent) == 2)
        assert [type(c) for c in source.sent] == [ResyncWeights, Checkpoint]
        await kit.wait_for(pilot, lambda: ("information", "checkpoint accepted") in app.status_history)
        assert ("information", "resync accepted") in app.status_history


async def test_results_for_other_consoles_commands_are_not_toasted(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        source.push(CommandResult(ts=kit.TS0 + 50, command_id="someone-else", command="pause", status="accepted"))
        await kit.wait_for(pilot, lambda: app.state.log[-1].text.startswith("command pause [someone-else]"))
        assert not any("pause" in message for _, message in app.status_history)


async def test_q_detaches_without_stop(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert not any(isinstance(c, Stop) for c in source.sent) and source.sent == []
    assert source.closed


async def test_read_only_control_keys_send_nothing(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("p", "w", "c")
        await kit.settle(pilot)
        assert source.sent == []
        assert [m for _, m in app.status_history] == ["read-only: pause not sent", "read-only: resync not sent", "read-only: checkpoint not sent"]
        assert "READ-ONLY" in kit.screen_text(app).splitlines()[0]


async def test_replay_same_screens_no_commands_and_end_is_not_an_error(kit):
    source = kit.Source(kit.make_run(steps=4), hold_open=False)
    app = RLConsoleApp(source, replay=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="end of replay")
        await kit.settle(pilot)
        assert "REPLAY" in kit.screen_text(app).splitlines()[0]
        await pilot.press("p")
        await kit.settle(pilot)
        assert source.sent == [] and "replay: pause not sent" in app.status_history[-1][1]
        for key, mode in (("s", "samples"), ("e", "params"), ("l", "events"), ("d", "dashboard")):
            await pilot.press(key)
            await kit.settle(pilot)
            assert app.current_mode == mode


async def test_a_dead_backend_reads_as_crashed_with_the_resume_command(kit, tmp_path, monkeypatch):
    """The stream ends while RUNNING and this machine's run lock is free: the backend died."""
    from backend.protocol.paths import LOCK_NAME

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    run_id = kit.Source([]).run_id
    (tmp_path / "runs" / run_id).mkdir(parents=True)
    (tmp_path / "runs" / run_id / LOCK_NAME).write_text("1\n")  # left behind, held by nobody
    source = kit.Source(kit.make_run(steps=3), hold_open=False)
    app = RLConsoleApp(source, run_id=run_id)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "disconnected", what="disconnect")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert "CRASHED" in header and "RUNNING" not in header and "DISCONNECTED" not in header
        assert any(f"rl-console run --resume {run_id}" in m for _, m in app.status_history)
        await pilot.press("q")


async def test_backend_gone_shows_disconnected_and_stays_usable(kit):
    source = kit.Source(kit.make_run(steps=3), hold_open=False)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "disconnected", what="disconnect")
        await kit.settle(pilot)
        assert "DISCONNECTED" in kit.screen_text(app).splitlines()[0]
        assert any("disconnected" in m and "q to leave" in m for _, m in app.status_history)
        await pilot.press("p")
        await kit.settle(pilot)
        assert source.sent == [] and app.status_history[-1] == ("error", "disconnected: pause not sent")
        await pilot.press("s")
        await kit.settle(pilot)
        assert app.current_mode == "samples" and "all 12 groups" in kit.screen_text(app)  # history still browsable
        await pilot.press("q")
    assert app.return_code == 0


async def test_connect_failure_is_shown_plainly(kit):
    source = kit.Source([], connect_error=ConnectionRefusedError("no run is listening on /tmp/x.sock"))
    app = RLConsoleApp(source, run_id="gone-run")
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "disconnected")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "gone-run" in text and "DISCONNECTED" in text
        assert any("could not connect: no run is listening" in m for _, m in app.status_history)


async def test_events_log_lists_events_with_alerts_highlighted(kit):
    events = kit.make_run(steps=3, alert_at=2)
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("l", "k")  # k: from the operator's view to all events
        await kit.settle(pilot)
        assert isinstance(app.screen, EventsScreen) and app.screen.filter_name == "all"
        log = app.screen.query_one(EventLog)
        lines = [strip.text for strip in log.lines]
        entries = [line for line in lines if re.match(r"\d+:\d\d:\d\d ", line)]  # long ones wrap onto more lines
        assert len(entries) == len(events) + 1  # + the hello
        assert any("run 20240501-120000-demo started" in line for line in lines)
        assert any("ALERT warning [zero_std_groups] step 2" in line for line in lines)
        alert_strip = next(s for s in log.lines if "ALERT" in s.text)
        assert any(seg.style and seg.style.bgcolor is not None for seg in alert_strip)  # highlighted
        source.push(Alert(ts=kit.TS0 + 300, rule="kl", severity="critical", message="kl 12.0 > 1.0", step=4))
        await kit.wait_for(pilot, lambda: len(app.state.alerts) == 2)
        await kit.settle(pilot)
        assert "ALERT critical [kl] step 4: kl 12.0 > 1.0" in log.lines[-1].text
        assert log.max_lines == 1000


async def test_events_log_is_bounded(kit):
    from backend.protocol.events import LogLine

    source = kit.Source([LogLine(ts=kit.TS0 + i, message=f"line {i}") for i in range(2500)])
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("l", "k")  # all events (info lines are not in the operator's view)
        await kit.settle(pilot, source)
        log = app.screen.query_one(EventLog)
        assert len(log.lines) <= 1000 and len(app.state.log) == 1000
        assert log.lines[-1].text.endswith("info: line 2499")


async def test_a_fast_runs_flood_keeps_the_operators_history_in_the_log(kit):
    """Commands and alerts early in a run stay in the operator's and the alerts' views when
    thousands of per-step lines follow (a fast run logs ~20 events a step); the view opens
    with its history, not with the few seconds left in the shared ring."""
    from backend.protocol.events import CommandResult, LogLine

    early = [CommandResult(ts=kit.TS0 + 1, command_id="c1", command="pause", status="applied", step=3),
             Alert(ts=kit.TS0 + 2, rule="zero_std", severity="warning", message="90% of groups have all-equal rewards", step=4)]
    flood = [LogLine(ts=kit.TS0 + 10 + i, message=f"line {i}") for i in range(3000)]
    source = kit.Source([*early, *flood])
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        assert len(app.state.log) == 1000  # the shared ring holds the newest only
        await pilot.press("l")
        await kit.settle(pilot)
        assert app.screen.filter_name == "operator"
        text = "\n".join(strip.text for strip in app.screen.query_one(EventLog).lines)
        assert "command pause [c1] applied" in text and "[zero_std] step 4" in text
        await pilot.press("k", "k", "k")  # all, commands, alerts
        await kit.settle(pilot)
        assert app.screen.filter_name == "alerts"
        lines = [strip.text for strip in app.screen.query_one(EventLog).lines]
        assert len(lines) == 1 and "[zero_std] step 4" in lines[0]
        await pilot.press("k", "k", "k")  # checkpoints, operator, all: a search in "all" reaches past the shared ring
        await kit.settle(pilot)
        assert app.screen.filter_name == "all"
        await pilot.press("slash", *"pause", "enter")
        await kit.settle(pilot)
        lines = [strip.text for strip in app.screen.query_one(EventLog).lines]
        assert any("command pause [c1] applied" in line for line in lines), lines


async def test_help_lists_every_binding_and_escape_goes_back(kit):
    source = kit.Source(kit.make_run(steps=1))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 90)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await pilot.press("question_mark")
        await kit.settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = kit.screen_text(app)
        for binding in RLConsoleApp.BINDINGS:
            assert binding.tooltip in text, binding.key
        for key in ("p ", "w ", "c ", "x ", "e ", "s ", "d ", "l ", "/ ", "? ", "q ", "f ", "z ", "t ", "o ", "k ", "y ", "! ", "esc", "ctrl+p"):
            assert any(line.strip().startswith(key.strip()) for line in text.splitlines()), key
        await pilot.press("escape")
        await kit.settle(pilot)
        assert app.current_mode == "samples"


async def test_command_palette_offers_every_action(kit):
    source = kit.Source(kit.make_run(steps=1))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for _, title, _ in PALETTE:
            assert title in commands
        assert "Quit" not in commands and "Keys" not in commands  # Detach and Help: keys say it for the console
        await commands["Samples"].callback()
        await kit.settle(pilot)
        assert app.current_mode == "samples"
        await commands["Pause / resume run"].callback()
        await kit.wait_for(pilot, lambda: len(source.sent) == 1)
        assert isinstance(source.sent[0], Pause)
        # and through the real palette UI
        await pilot.press("ctrl+p")
        await kit.settle(pilot)
        await pilot.press(*"Events log")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await kit.wait_for(pilot, lambda: app.current_mode == "events", what="palette switched to events")


async def test_typing_in_inputs_never_triggers_keys(kit):
    source = kit.Source(kit.make_run(steps=1))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("slash")
        await kit.settle(pilot)
        await pilot.press(*"pwcq/?desl")
        await kit.settle(pilot)
        assert app.current_mode == "samples" and source.sent == []
        assert isinstance(app.focused, Input) and app.focused.value == "pwcq/?desl"


async def test_stream_error_is_shown_as_disconnect_reason(kit):
    class BrokenSource(kit.Source):
        async def events(self):
            count = 0
            async for event in super().events():
                yield event
                count += 1
                if count == 5:
                    raise RuntimeError("frame too large from backend")

    source = BrokenSource(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "disconnected")
        await kit.settle(pilot)
        assert app.state.events_seen == 5 and app.state.connection_detail == "frame too large from backend"
        assert any("disconnected: frame too large from backend" in m for _, m in app.status_history)
        assert "DISCONNECTED" in kit.screen_text(app).splitlines()[0]
        await pilot.press("l")
        await kit.settle(pilot)
        assert "disconnected: frame too large from backend" in app.screen.query_one(EventLog).lines[-1].text


async def test_command_results_show_on_the_status_line_not_as_toasts(kit):
    """One line above the footer says what became of the last command (with the reason when it
    was rejected), on every screen; nothing pops up over the data."""
    from console.widgets.status_line import StatusLine

    reason = "cannot checkpoint while paused"

    def answer(command):
        status = "rejected" if command.kind == "checkpoint" else "accepted"
        return [CommandResult(ts=kit.TS0 + 60, command_id=command.id, command=command.kind, status=status,
                              reason=reason if status == "rejected" else "")]

    source = kit.Source(kit.make_run(steps=2), respond=answer)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("w")
        await kit.wait_for(pilot, lambda: "resync accepted" in kit.screen_text(app).splitlines()[-2], what="accepted on the status line")
        await pilot.press("c")
        await kit.wait_for(pilot, lambda: "checkpoint rejected" in kit.screen_text(app), what="rejected on the status line")
        lines = kit.screen_text(app).splitlines()
        assert "checkpoint rejected: cannot checkpoint while paused" in lines[-2] and "resync" not in lines[-2]
        assert " ? help " in lines[-1]  # the footer stays the last line
        assert not app.screen.query("Toast")  # no toast over the data
        await pilot.press("s")
        await kit.settle(pilot)
        assert "checkpoint rejected" in app.screen.query_one(StatusLine).plain  # the same line on every screen


async def test_backend_says_viewer_then_controller(kit):
    """The backend's control lock, as the console shows it: read-only while another console
    controls the run (keys and the parameter form refuse, naming the holder), then in control."""
    from backend.protocol.events import ControlStatus

    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        source.push(ControlStatus(role="viewer", holder="rl-console alice@pts/1 (pid 42, uid 0)"))
        await kit.wait_for(pilot, lambda: app.read_only, what="viewer role")
        await kit.settle(pilot)
        assert "READ-ONLY" in kit.screen_text(app).splitlines()[0]
        await pilot.press("p")
        await kit.settle(pilot)
        assert source.sent == []
        assert app.status_history[-1] == ("warning", "read-only: pause not sent (rl-console alice@pts/1 (pid 42, uid 0) controls "
                                                 "the run; T: take control)")
        await pilot.press("e")
        await kit.settle(pilot)
        assert app.screen.query_one("#param-apply").disabled
        assert "alice@pts/1" in kit.screen_text(app)

        source.push(ControlStatus(role="controller", holder="rl-console me"))
        await kit.wait_for(pilot, lambda: not app.read_only, what="controller role")
        await kit.settle(pilot)
        assert ("information", "this console now controls the run") in app.status_history
        assert not app.screen.query_one("#param-apply").disabled
        app.set_focus(None)
        await pilot.press("p")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="pause sent")
        assert source.sent[0].kind == "pause"


async def test_take_control_from_the_console_and_the_hand_back_said_as_such(kit):
    """T on a read-only console (another console controls the run) sends `subscribe` with take
    on its connection; a console whose control a `ctl --take` borrowed says it lost it and, when
    it comes back, that it is back (and from whom), not "now controls"."""
    from backend.protocol.events import ControlStatus

    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        source.push(ControlStatus(role="viewer", holder="rl-console bob (pid 7, uid 0)"))
        await kit.wait_for(pilot, lambda: app.read_only, what="viewer role")
        assert app.status_history[-1] == ("warning", "read-only: rl-console bob (pid 7, uid 0) controls this run; T: take control")
        await pilot.press("T")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="take sent")
        assert source.sent[0].kind == "subscribe" and source.sent[0].take
        source.push(ControlStatus(role="controller", holder="rl-console me", reason="control taken by rl-console me"))
        await kit.wait_for(pilot, lambda: not app.read_only, what="controller role")
        assert app.status_history[-1] == ("information", "this console now controls the run")
        await pilot.press("T")
        await kit.settle(pilot)
        assert len(source.sent) == 1 and app.status_history[-1] == ("information", "this console already controls the run")

        # `rl-console ctl RUN pause --take` borrows control for one command
        source.push(ControlStatus(role="viewer", holder="rl-console ctl (pid 9, uid 0)", reason="control taken by rl-console ctl (pid 9, uid 0)"))
        await kit.wait_for(pilot, lambda: app.read_only, what="taken")
        source.push(ControlStatus(role="controller", holder="rl-console me", reason="rl-console ctl (pid 9, uid 0) released control"))
        await kit.wait_for(pilot, lambda: not app.read_only, what="back")
        assert list(app.status_history)[-2:] == [
            ("warning", "read-only: rl-console ctl (pid 9, uid 0) controls this run; T: take control"),
            ("information", "this console controls the run again (rl-console ctl (pid 9, uid 0) released control)")]


async def test_a_command_another_client_applied_is_said_on_the_status_line(kit):
    """`ctl RUN pause --take` from a shell while this console controls the run: the console
    says what was done, not only that control came back. Commands of the history replayed on
    attach are not announced."""
    from backend.protocol.events import CommandResult

    events = kit.make_run(steps=2)
    old = CommandResult(ts=kit.TS0 + 100, command_id="old", command="checkpoint", status="applied", step=1)
    old = old.model_copy(update={"seq": events[-1].seq + 1})
    source = kit.Source([*events, old])  # the hello says where this history ends
    last = old.seq
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        assert not any("sent by another client" in m for _, m in app.status_history)
        source.push(CommandResult(seq=last + 1, ts=kit.TS0 + 200, command_id="x1", command="pause", status="accepted", step=2),
                    CommandResult(seq=last + 2, ts=kit.TS0 + 201, command_id="x1", command="pause", status="applied", step=2))
        await kit.wait_for(pilot, lambda: ("information", "pause applied at step 2 (sent by another client)")
                           in app.status_history, what="announced")
        assert not any("accepted" in m and "another client" in m for _, m in app.status_history)


async def test_a_read_only_attach_cannot_take_control(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("T")
        await kit.settle(pilot)
        assert source.sent == []
        assert app.status_history[-1] == ("warning", "attached --read-only: attach again without --read-only to take control")


async def test_run_resumed_drops_the_lost_steps(kit):
    from backend.protocol.events import Alert, RunResumed

    events = kit.make_run(steps=8)
    last = events[-1].seq
    # an alert of a kept step, and a lasting condition raised in a lost one (its backend died
    # before it could clear it)
    early = Alert(seq=last + 1, ts=kit.TS0 + 800, rule="truncation", severity="warning", message="50% hit max_tokens",
                  step=4, metric="truncated_ratio", value=0.5, threshold=0.5)
    lost = Alert(seq=last + 2, ts=kit.TS0 + 801, rule="zero_std", severity="warning", message="90% of groups",
                 step=7, metric="frac_reward_zero_std", value=0.9, threshold=0.75, lasting=True, since=7)
    # a condition raised at a kept step and still open when the backend died
    still = Alert(seq=last + 3, ts=kit.TS0 + 802, rule="kl", severity="warning", message="kl 0.9 > 0.5",
                  step=3, metric="kl", value=0.9, threshold=0.5, lasting=True, since=3)
    events += [early, lost, still]
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        assert app.state.step == 8 and sorted(app.state.active_alerts) == ["kl", "zero_std"]
        source.push(RunResumed(seq=events[-1].seq + 1, ts=kit.TS0 + 900, step=5, checkpoint="/r/checkpoints/step-000005"))
        await kit.wait_for(pilot, lambda: app.state.step == 5, what="resumed step")
        assert [m.step for m in app.state.steps] == [1, 2, 3, 4, 5]
        assert all(g.step <= 5 for g in app.state.groups) and max(app.state.groups_by_step) == 5
        assert any(m.kind == "resume" and m.step == 5 for m in app.state.markers)
        assert not app.state.active_alerts and [a.rule for a in app.state.alerts] == ["truncation", "kl"]
        # the kept condition says it was open at the end of its backend (the new one raises it again if it holds)
        kl = app.state.alerts[-1]
        assert kl.message == "kl 0.9 > 0.5 (still open when its backend ended; watched afresh since the resume)"
        assert app.state.alerts[0].message == "50% hit max_tokens"  # an alert of no lasting condition: as it was
        await kit.settle(pilot)
        assert "run resumed from step 5" in " ".join(e.text for e in app.state.log)
        assert "90% of groups" not in kit.screen_text(app)


async def test_replay_step_scrubber(kit, tmp_path, monkeypatch):
    """`rl-console replay`: [ ] { } < > move through the recorded steps; every screen shows the
    run as it was right after that step, read back from a real run log (SQLite)."""
    from backend.runstore import RunStore
    from console import runs

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    rdir = tmp_path / "runs" / kit.RUN_ID
    rdir.mkdir(parents=True)
    store = RunStore(rdir / "events.db")
    store.append_many(kit.make_run(steps=12))
    store.close()

    app = RLConsoleApp(runs.ReplaySource(kit.RUN_ID), run_id=kit.RUN_ID, replay=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await kit.wait_for(pilot, lambda: app._replay_loaded, what="replay loaded")
        await kit.settle(pilot)
        assert "step 12/12" in kit.screen_text(app).splitlines()[0]
        assert "◀ step" in app.screen.query_one("KeyFooter").plain

        async def press(key: str, step: int) -> None:
            await pilot.press(key)
            await kit.wait_for(pilot, lambda: app.state.step == step, what=f"step {step} after {key}")
            await kit.settle(pilot)
            assert max(m.step for m in app.state.steps) == step
            assert all(g.step <= step for g in app.state.groups)
            assert f"step {step}/12" in kit.screen_text(app).splitlines()[0]

        await press("left_square_bracket", 11)
        await press("left_curly_bracket", 1)  # clamped at the first step
        before = app.state
        await press("right_square_bracket", 2)
        assert app.state is before  # forward: only the events in between were applied
        await press("greater_than_sign", 12)
        await press("less_than_sign", 1)
        await pilot.press("l", "k")  # all events: the step lines too
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "step 1:" in text and "step 5:" not in text


async def test_scrub_keys_do_nothing_live(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("left_square_bracket")
        await kit.settle(pilot)
        assert app.state.step == 3 and "◀ step" not in app.screen.query_one("KeyFooter").plain


@pytest.mark.parametrize("reason, shown", [("completed 3 steps", "completed"), ("stopped at step 3", "stopped")])
async def test_backend_exit_after_a_finished_run_is_not_an_error(kit, reason, shown):
    """A run that ended says how: completed (all its steps) or stopped (by an operator)."""
    from backend.protocol.events import StateChanged

    events = kit.make_run(steps=3) + [StateChanged(seq=10_000, ts=kit.TS0 + 999, state="finished", reason=reason, step=3)]
    source = kit.Source(events, hold_open=False)
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="ended")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert f" {shown.upper()} " in header and "DISCONNECTED" not in header and "FINISHED" not in header
        assert app.status_history[-1][0] == "information" and f"the run {shown} at step 3" in app.status_history[-1][1]


async def test_switching_screens_skips_the_style_pass_unless_the_theme_changed(kit, monkeypatch):
    """LiveScreen drops Textual's re-application of all CSS on every resume (a cost of each
    screen switch) when the CSS has not changed; a theme changed meanwhile still shows."""
    from textual.dom import DOMNode

    source = kit.Source(kit.make_run())
    app = RLConsoleApp(source)
    calls: list[str] = []
    update_node_styles = DOMNode.update_node_styles

    def counted(self, animate=True):
        calls.append(type(self).__name__)
        return update_node_styles(self, animate)

    monkeypatch.setattr(DOMNode, "update_node_styles", counted)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await pilot.press("d")
        await kit.settle(pilot)
        calls.clear()
        for key in "sdsd":
            await pilot.press(key)
            await pilot.pause()
        assert app.current_mode == "dashboard"
        assert calls == [], f"a screen switch re-applied every style: {calls}"
        dark = app.screen.styles.background
        await pilot.press("s")
        app.theme = "textual-light"
        await pilot.pause()
        await pilot.press("d")
        await kit.settle(pilot)
        light = app.screen.styles.background
        assert light != dark, "the theme change made while the dashboard was hidden did not reach it"
        assert light.brightness > dark.brightness


async def test_screens_are_composed_in_the_background_so_a_first_visit_is_a_switch(kit):
    source = kit.Source(kit.make_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await kit.wait_for(pilot, lambda: all(textual_compat.mode_installed(app, m) for m in RLConsoleApp.PRECOMPOSE),
                           what="screens composed ahead of time")
        assert app.current_mode == "dashboard"  # nothing was shown meanwhile
        ahead = textual_compat.mode_screen(app, "samples")
        assert ahead.is_mounted and ahead.rendered_version == -1  # mounted, never painted from state
        await pilot.press("s")
        await kit.settle(pilot)
        assert app.screen is ahead
        assert app.screen.query_one(GroupsTable).row_count > 0  # painted from state once shown


def _footer_enabled(app) -> dict[str, bool]:
    from console.widgets.footer import KeyFooter

    return {shown: enabled for _key, shown, _desc, enabled in app.screen.query_one(KeyFooter).entries()}


@pytest.mark.parametrize("how", ["replay", "completed", "crashed"])
async def test_controls_that_cannot_act_are_dimmed_not_offered_and_say_why(kit, how, tmp_path, monkeypatch):
    """On an ended run or in replay, p / w / c are dimmed in the footer, left out of the
    palette, and pressing one says why on the status line; nothing is sent."""
    from backend.protocol.paths import LOCK_NAME

    events = kit.make_run(steps=3)
    if how == "completed":
        events.append(StateChanged(seq=10_000, ts=kit.TS0 + 999, state="finished", reason="completed 3 steps", step=3))
    if how == "crashed":  # the stream ends while running and the run lock is free: the backend died
        monkeypatch.setenv("RLC_HOME", str(tmp_path))
        (tmp_path / "runs" / kit.RUN_ID).mkdir(parents=True)
        (tmp_path / "runs" / kit.RUN_ID / LOCK_NAME).write_text("1\n")
    source = kit.Source(events, hold_open=False)
    app = RLConsoleApp(source, run_id=kit.RUN_ID, replay=how == "replay")
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection in ("ended", "disconnected"), what="end of stream")
        await kit.settle(pilot)
        enabled = _footer_enabled(app)
        assert enabled["p"] is False and enabled["w"] is False and enabled["c"] is False, enabled
        assert enabled["s"] is True and enabled["?"] is True  # views still work
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert not titles & {"Pause / resume run", "Resync weights", "Checkpoint"} and "Samples" in titles
        for key in ("p", "w", "c"):
            await pilot.press(key)
            await kit.settle(pilot)
            status = kit.screen_text(app).splitlines()[-2]
            assert "not sent" in status, status
        assert source.sent == []
        said = app.status_history[-1][1]
        if how == "replay":
            assert said == "replay: checkpoint not sent (commands are off while replaying)"
        elif how == "completed":
            assert said.startswith("the run completed at step 3: checkpoint not sent; to train further: rl-console run --resume")
        else:
            assert said == f"the run crashed at step 3: checkpoint not sent; to continue it: rl-console run --resume {kit.RUN_ID}"
        await pilot.press("e")
        await kit.settle(pilot)
        assert app.screen.query_one("#param-apply").disabled  # and the form does not offer edits


async def test_controls_of_a_live_run_are_offered(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        enabled = _footer_enabled(app)
        assert enabled["p"] and enabled["w"] and enabled["c"]
        assert {"Pause / resume run", "Resync weights", "Checkpoint"} <= {c.title for c in app.get_system_commands(app.screen)}
        source.push(StateChanged(ts=kit.TS0 + 999, state="finished", reason="stopped at step 3", step=3))
        await kit.wait_for(pilot, lambda: app.state.ended, what="run ended")
        await kit.settle(pilot)
        assert _footer_enabled(app)["p"] is False  # dimmed as soon as the run ends


async def test_stop_asks_first_then_sends_stop_with_or_without_a_checkpoint(kit):
    from console.screens.stop import StopModal
    from console.widgets.run_header import RunHeader

    events = kit.make_run(steps=4)
    from backend.protocol.events import CheckpointSaved

    events.append(CheckpointSaved(seq=10_000, ts=kit.TS0 + 500, step=2, path="/r/checkpoints/step-000002", duration_s=0.5))
    source = kit.Source(events)
    app = RLConsoleApp(source, run_id=kit.RUN_ID)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        assert " x stop " in kit.screen_text(app).splitlines()[-1]
        await pilot.press("x")
        await kit.wait_for(pilot, lambda: isinstance(app.screen, StopModal), what="stop dialog")
        text = kit.screen_text(app)
        assert "now step 4" in text and "save a checkpoint first" in text and "the steps since step 2 are lost" in text
        # the run goes on while the dialog is open: the dialog and the header beneath follow it
        more = [e for e in kit.make_run(steps=6) if getattr(e, "step", 0) in (5, 6) and e.kind in ("step_metrics", "weights_synced")]
        for i, e in enumerate(more):
            source.push(e.model_copy(update={"seq": 20_000 + i}))
        await kit.wait_for(pilot, lambda: app.screen.step == 6, what="the dialog's step follows the run")
        await kit.wait_for(pilot, lambda: " step 6 " in app.screen_stack[-2].query_one(RunHeader).render().plain + " ",
                           what="the header beneath follows the run")
        await pilot.press("enter")  # the dialog opens on cancel: Enter alone never stops a run
        await kit.wait_for(pilot, lambda: not isinstance(app.screen, StopModal), what="dialog closed")
        assert source.sent == [] and "stop cancelled" in app.status_history[-1][1]
        await pilot.press("x")
        await kit.wait_for(pilot, lambda: isinstance(app.screen, StopModal))
        await pilot.press("escape")
        await kit.wait_for(pilot, lambda: not isinstance(app.screen, StopModal))
        assert source.sent == []
        await pilot.press("x")
        await kit.wait_for(pilot, lambda: isinstance(app.screen, StopModal))
        await pilot.press("y")
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="stop sent")
        assert isinstance(source.sent[0], Stop) and source.sent[0].checkpoint is True
        await pilot.press("x")
        await kit.wait_for(pilot, lambda: isinstance(app.screen, StopModal))
        await pilot.press("exclamation_mark")
        await kit.wait_for(pilot, lambda: len(source.sent) == 2, what="second stop sent")
        assert isinstance(source.sent[1], Stop) and source.sent[1].checkpoint is False
        await kit.wait_for(pilot, lambda: app.status_history[-1][1] == "stop accepted", what="answer on the status line")
        assert "Stop the run" in {c.title for c in app.get_system_commands(app.screen)}


async def test_stop_on_an_ended_run_opens_no_dialog(kit):
    from console.screens.stop import StopModal

    events = kit.make_run(steps=2) + [StateChanged(seq=10_000, ts=kit.TS0 + 999, state="finished", reason="stopped at step 2", step=2)]
    source = kit.Source(events, hold_open=False)
    app = RLConsoleApp(source, run_id=kit.RUN_ID)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended")
        await kit.settle(pilot)
        await pilot.press("x")
        await kit.settle(pilot)
        assert not isinstance(app.screen, StopModal) and source.sent == []
        assert app.status_history[-1][1].startswith("the run stopped at step 2: stop not sent")
        assert "Stop the run" not in {c.title for c in app.get_system_commands(app.screen)}


async def test_events_log_filters_by_kind_operator_view_first(kit):
    """The log opens on what an operator acts on (commands, state, alerts, checkpoints), not
    the per-group and per-step lines; k cycles all / commands / alerts / checkpoints & syncs."""
    from backend.protocol.events import CheckpointSaved

    events = kit.make_run(steps=3, alert_at=2, params_at=None)
    events.append(CheckpointSaved(seq=10_000, ts=kit.TS0 + 500, step=3, path="/r/checkpoints/step-000003", duration_s=0.4))
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 60)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("p")
        await kit.wait_for(pilot, lambda: any("command pause" in e.text for e in app.state.log), what="pause answered")
        await pilot.press("l")
        await kit.settle(pilot)
        screen = app.screen
        assert " k kind " in kit.screen_text(app).splitlines()[-1]

        def shown() -> list[str]:  # one per entry: a long entry wraps onto the next lines
            entries: list[str] = []
            for strip in screen.query_one(EventLog).lines:
                if re.match(r"\d+:\d\d:\d\d ", strip.text) or not entries:
                    entries.append(strip.text)
                else:
                    entries[-1] += " " + strip.text
            return entries

        def has(lines: list[str], *parts: str) -> bool:
            return all(any(p in line for line in lines) for p in parts)

        lines = shown()
        assert screen.filter_name == "operator" and "events · operator (k)" in str(screen.query_one(EventLog).border_title)
        assert has(lines, "run 20240501-120000-demo started", "state → running", "ALERT warning", "command pause", "checkpoint at step 3")
        assert not any(" group " in line or "weights v" in line or ": reward " in line for line in lines)
        expected = {
            "all": ("group 0: reward", "weights v1 synced", "step 1: reward", "command pause"),
            "commands": ("command pause",),
            "alerts": ("ALERT warning [zero_std_groups]",),
            "checkpoints & syncs": ("weights v1 synced", "checkpoint at step 3"),
        }
        for name, parts in expected.items():
            await pilot.press("k")
            await kit.settle(pilot)
            lines = shown()
            assert screen.filter_name == name and has(lines, *parts), (name, lines)
            if name == "alerts":
                assert all("ALERT" in line for line in lines)
                source.push(kit.make_group(4, 0, ts=kit.TS0 + 600))  # live events keep the filter
                await kit.wait_for(pilot, lambda: app.state.groups_total == 13, what="new group")
                await kit.settle(pilot)
                assert all("ALERT" in line for line in shown())
        await pilot.press("k")
        await kit.settle(pilot)
        assert screen.filter_name == "operator"


async def test_events_log_search_shows_matching_lines_and_esc_clears_it(kit):
    """`/` on the events log searches its lines (not the samples); single keys still work on
    opening; esc clears the search and shows every line again."""
    events = kit.make_run(steps=3, alert_at=2)
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("l", "k")  # k reaches the screen, not the search box: all events
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, EventsScreen) and screen.filter_name == "all"
        log = screen.query_one(EventLog)

        def entries() -> list[str]:
            return [s.text for s in log.lines if re.match(r"\d+:\d\d:\d\d ", s.text)]

        everything = len(entries())
        await pilot.press("slash", *"ZERO_std")
        await kit.settle(pilot)
        assert isinstance(app.screen, EventsScreen)  # the log's own search, not the samples'
        shown = entries()
        assert shown and all("zero_std" in line.casefold() for line in shown) and len(shown) < everything
        assert "matching 'zero_std'" in str(log.border_title)
        await pilot.press("enter", "k")  # enter keeps the search; the next key is a command again
        await kit.settle(pilot)
        assert screen.filter_name == "commands" and screen.search == "zero_std"
        await pilot.press("escape")
        await kit.settle(pilot)
        assert screen.search == "" and "matching" not in str(log.border_title)


async def test_a_stop_whose_last_event_did_not_arrive_reads_as_stopped_not_crashed(kit, tmp_path, monkeypatch):
    """The stream ends while RUNNING and the backend is gone, but its own log says it stopped
    cleanly (Ctrl-C in the terminal that ran it): the console says stopped, as `ls` does."""
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    run_id = kit.Source([]).run_id
    make_run_files(tmp_path, run_id, ("running", "training"), ("finished", "stopped at step 3 [SIGINT]"), step=3, checkpoint=True)
    source = kit.Source(kit.make_run(steps=3), hold_open=False)
    app = RLConsoleApp(source, run_id=run_id, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="end")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert "STOPPED" in header and "CRASHED" not in header and "RUNNING" not in header, header
        assert any(f"{run_id} stopped at step 3" in m and f"rl-console run --resume {run_id}" in m
                   for _, m in app.status_history), app.status_history
        await pilot.press("q")


async def test_a_backend_that_died_before_a_checkpoint_is_crashed_with_no_resume_offered(kit, tmp_path, monkeypatch):
    """Connecting as the backend dies (the socket resets): the console reads how the run ended
    from its files and says so — crashed, no checkpoint, start anew — not DISCONNECTED/UNKNOWN."""
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    run_id = kit.Source([]).run_id
    make_run_files(tmp_path, run_id, ("starting", "building"), ("running", "training"), step=0, checkpoint=False)
    source = kit.Source([], connect_error=ConnectionResetError(104, "Connection reset by peer"), run_id=run_id)
    app = RLConsoleApp(source, run_id=run_id)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="settled")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert "CRASHED" in header and "UNKNOWN" not in header and "DISCONNECTED" not in header, header
        said = " ".join(m for _, m in app.status_history)
        assert "died while running" in said and "start a new run" in said and "--resume" not in said
        await pilot.press("p")
        await kit.settle(pilot)
        assert source.sent == [] and "next: start a new run" in app.status_history[-1][1]
        await pilot.press("q")


async def test_replay_of_a_crashed_run_ends_on_how_it_ended(kit, tmp_path, monkeypatch):
    """Re-attaching to a dead run opens its log as a replay: at its end the header says
    CRASHED (the log itself stops at RUNNING) and the status line says what to do."""
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    run_id = kit.Source([]).run_id
    make_run_files(tmp_path, run_id, ("running", "training"), step=3, checkpoint=True)
    source = kit.Source(kit.make_run(steps=3), hold_open=False)
    app = RLConsoleApp(source, run_id=run_id, replay=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="end of replay")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert "CRASHED" in header and "RUNNING" not in header, header
        assert any("replay: end of the event log — " in m and f"rl-console run --resume {run_id}" in m
                   for _, m in app.status_history)
        await pilot.press("q")
