"""RunState: pure logic, no Textual."""

from __future__ import annotations

import pytest

from backend.protocol import PROTOCOL_VERSION
from backend.protocol.commands import Pause, ResyncWeights, SetParams
from backend.protocol.events import (
    Alert,
    CommandResult,
    GpuStats,
    Hello,
    LogLine,
    ParamsApplied,
    Progress,
    StateChanged,
    WeightsSynced,
)
from console.state import RunState, describe, fmt_elapsed, is_zero_std, max_abs_advantage, one_line, truncated_count


def fed(events, **kw) -> RunState:
    state = RunState(**kw)
    for event in events:
        state.apply(event)
    return state


def test_run_info_state_and_progress(kit):
    state = fed(kit.make_run(steps=3))
    assert state.run_id == kit.RUN_ID
    assert (state.profile, state.model, state.task, state.engine) == ("default", "tiny-gpt2-reverse", "reverse-word", "vllm-cpu")
    assert state.reward_functions == list(kit.FUNCS)
    assert state.state == "running" and state.state_reason == "engine ready"
    assert state.progress is not None and (state.progress.current, state.progress.total) == (3, 3)
    assert state.step == 3 and state.weight_version == 3
    assert state.gpu is not None and not state.gpu.available and state.gpu.reason == "no NVIDIA GPU"
    assert len(state.steps) == 3 and len(state.groups) == 12 and state.groups_total == 12
    assert sorted(state.groups_by_step) == [1, 2, 3] and all(len(v) == 4 for v in state.groups_by_step.values())


def test_elapsed_comes_from_event_timestamps_only(kit):
    state = fed(kit.make_run(steps=4))
    last = max(e.ts for e in kit.make_run(steps=4))
    assert state.elapsed == pytest.approx(last - kit.TS0)
    state.on_hello(Hello(protocol=PROTOCOL_VERSION, ts=kit.TS0 + 99_999))  # a reconnect's hello must not move it
    assert state.elapsed == pytest.approx(last - kit.TS0)
    assert fmt_elapsed(3725) == "1:02:05"


def test_the_run_clock_counts_running_time_not_the_gaps_nor_this_connection(kit):
    from backend.protocol.events import ControlStatus, RunResumed, RunStarted

    run = kit.make_run(steps=4)
    last = max(e.ts for e in run)
    # a console attaching late gets its connection's frame first: it is not the run's start
    state = fed([ControlStatus(ts=kit.TS0 + 5_000, role="controller")] + run)
    assert state.first_ts == kit.TS0 and state.elapsed == pytest.approx(last - kit.TS0)
    # while its backend is live the clock runs on between events (a step can take minutes) ...
    state.on_hello(Hello(protocol=PROTOCOL_VERSION, ts=last))
    assert state.state == "running" and state.elapsed_at(last + 40) == pytest.approx(last + 40 - kit.TS0)
    assert state.elapsed_at(None) == pytest.approx(last - kit.TS0)  # a replay or a scripted feed: events only
    # ... and stops with the run
    state.apply(StateChanged(ts=last + 1, state="finished", reason="completed 4 steps", seq=10_000))
    assert state.elapsed_at(last + 999) == pytest.approx(last + 1 - kit.TS0)
    # resumed an hour later: the hour it lay still is not run time
    later = last + 3600
    state.apply(RunResumed(ts=later, step=4, checkpoint="step-4", seq=10_001))
    state.apply(StateChanged(ts=later + 1, state="starting", reason="resuming", seq=10_004))  # as the backend says it
    state.apply(RunStarted(ts=later + 2, run_id=kit.RUN_ID, profile="default", model="m", task="t", engine="e", seq=10_002))
    state.apply(StateChanged(ts=later + 30, state="running", reason="training", seq=10_003))
    assert state.elapsed == pytest.approx((last + 1 - kit.TS0) + 30)


def test_ring_buffers_are_bounded_and_index_follows_evictions(kit):
    state = RunState(max_groups=10, max_steps=5, max_log=20, max_alerts=3)
    for i in range(200):
        state.apply(kit.make_group(step=i // 4, group=i % 4, ts=kit.TS0 + i))
    assert len(state.groups) == 10 and state.groups_total == 200
    assert sum(len(v) for v in state.groups_by_step.values()) == 10
    assert min(state.groups_by_step) == 47  # groups 190..199 -> steps 47 (2 groups), 48, 49
    assert len(state.log) == 20 and state.log_total == 200
    for event in kit.make_run(steps=9):
        state.apply(event)
    assert len(state.steps) == 5 and [m.step for m in state.steps] == [5, 6, 7, 8, 9]
    for i in range(7):
        state.apply(Alert(rule="r", severity="info", message=f"a{i}", ts=kit.TS0))
    assert [a.message for a in state.alerts] == ["a4", "a5", "a6"]


def test_log_since_returns_only_new_entries(kit):
    state = RunState(max_log=5)
    for i in range(3):
        state.apply(LogLine(message=f"m{i}", ts=kit.TS0 + i))
    assert [e.text for e in state.log_since(0)] == ["info: m0", "info: m1", "info: m2"]
    assert [e.text for e in state.log_since(2)] == ["info: m2"]
    assert state.log_since(3) == []
    for i in range(3, 10):
        state.apply(LogLine(message=f"m{i}", ts=kit.TS0 + i))
    assert [e.index for e in state.log_since(1)] == [5, 6, 7, 8, 9]  # what fell off is gone


def test_describe_renders_every_event_on_one_line(kit):
    for event in kit.make_run(steps=2):
        text, level = describe(event)
        assert text and "\n" not in text
        assert level in ("info", "warning", "critical", "alert-info", "alert-warning", "alert-critical")
    text, level = describe(Alert(rule="kl", severity="critical", message="kl exploded", step=3, suggestion="lower lr"))
    assert level == "alert-critical" and "kl exploded" in text and "lower lr" in text
    text, level = describe(CommandResult(command_id="x", command="set_params", status="rejected", reason="paused"))
    assert level == "warning" and "rejected: paused" in text
    assert describe(GpuStats(available=False, reason="no NVIDIA GPU"))[0] == "gpu: none (no NVIDIA GPU)"


def test_set_params_pending_then_applied(kit):
    state = fed(kit.make_run(steps=2, params_at=None))
    cmd = SetParams(temperature=0.7, top_p=0.9)
    state.record_sent(cmd)
    assert state.is_ours(cmd.id)
    assert state.pending_value("temperature") == (0.7, "sent")
    assert state.param_status("temperature") == ("pending 0.7 (sent)", "pending")
    state.apply(CommandResult(command_id=cmd.id, command="set_params", status="accepted"))
    assert state.pending_value("top_p") == (0.9, "accepted")
    state.apply(ParamsApplied(command_id=cmd.id, step=3, changed={"temperature": 0.7, "top_p": 0.9},
                              params={**kit.PARAMS, "temperature": 0.7, "top_p": 0.9}))
    assert state.pending == {}
    assert state.live_params["temperature"] == 0.7 and state.live_param_values()["top_p"] == 0.9
    assert state.param_status("temperature") == ("applied at step 3", "applied")
    assert state.param_status("beta") == ("", "")
    assert any(m.step == 3 and m.kind == "params" for m in state.markers)


def test_rejected_command_records_reason_and_clears_pending(kit):
    state = fed(kit.make_run(steps=1))
    cmd = SetParams(num_generations=6)
    state.record_sent(cmd)
    state.apply(CommandResult(command_id=cmd.id, command="set_params", status="rejected",
                              reason="num_generations must divide the batch size 32"))
    assert cmd.id not in state.pending
    rejection = state.last_param_rejection()
    assert rejection is not None and rejection.reason == "num_generations must divide the batch size 32"
    assert state.param_status("num_generations") == ("rejected: 6", "rejected")
    # a later successful change of the same field wins over the old rejection
    ok = SetParams(num_generations=8)
    state.record_sent(ok)
    state.apply(ParamsApplied(command_id=ok.id, step=2, changed={"num_generations": 8}, params={**kit.PARAMS}))
    assert state.param_status("num_generations")[1] == "applied"
    assert state.last_param_rejection() is None  # the form's note goes once a change went through


def test_another_clients_rejected_change_is_not_this_consoles_rejection(kit):
    """`ctl set` from another terminal, rejected (this console holds control): the events log
    says so, but the form does not tell this console that it was refused."""
    state = fed(kit.make_run(steps=1))
    state.apply(CommandResult(command_id="theirs-1", command="set_params", status="rejected",
                              reason="read-only: rl-console alice@pts/0 controls this run"))
    assert state.last_param_rejection() is None
    assert any("read-only" in e.text for e in state.log)


def test_send_failure_is_a_rejection():
    state = RunState()
    cmd = SetParams(beta=0.1)
    state.record_sent(cmd)
    state.record_send_failed(cmd.id, "broken pipe")
    assert state.pending == {} and state.rejections[-1].status == "send-failed"


def test_markers_for_params_resync_and_pause(kit):
    state = fed(kit.make_run(steps=4, params_at=2))
    resync = ResyncWeights()
    state.record_sent(resync)
    state.apply(CommandResult(command_id=resync.id, command="resync", status="accepted", step=4))
    state.apply(WeightsSynced(version=5, step=4, duration_s=0.1, bytes=1, checksum="c", verified=True))
    state.apply(StateChanged(state="paused", step=4))
    state.apply(StateChanged(state="paused", step=4))  # duplicates are not repeated
    kinds = [(m.step, m.kind, m.label) for m in state.markers]
    assert kinds == [(2, "params", "P"), (4, "resync", "W"), (4, "pause", "‖")]
    # ordinary per-step syncs are not markers
    assert not any(m.kind == "resync" and m.step in (1, 2, 3) for m in state.markers)


def test_connection_lifecycle(kit):
    state = RunState()
    assert state.connection == "connecting" and not state.connected
    state.on_hello(Hello(protocol=PROTOCOL_VERSION, run_id="r1"))
    assert state.connected and state.run_id == "r1"
    state.on_disconnect("backend gone")
    assert state.connection == "disconnected" and "backend gone" in state.log[-1].text
    state.on_disconnect(ended=True)
    assert state.connection == "ended"


def test_reward_series_total_and_per_function(kit):
    state = fed(kit.make_run(steps=5))
    total = state.reward_series()
    assert [s for s, _, _ in total] == [1, 2, 3, 4, 5] and all(std is not None for _, _, std in total)
    per_fn = state.reward_series("first_char")
    assert len(per_fn) == 5 and all(std is None for _, _, std in per_fn)
    assert per_fn[0][1] == state.steps[0].rewards_by_function["first_char"]
    assert state.reward_series("nope") == []


def test_view_groups_filters_and_sorts(kit):
    state = fed(kit.make_run(steps=6))
    all_groups = state.view_groups()
    assert len(all_groups) == 24
    assert (all_groups[0].step, all_groups[0].group) == (6, 3)  # newest first
    zero = state.view_groups(zero_std=True)
    assert zero and all(is_zero_std(g) for g in zero)
    assert {(g.step, g.group) for g in zero} >= {(2, 3), (4, 3), (6, 3)}
    trunc = state.view_groups(truncated=True)
    assert trunc and all(truncated_count(g) > 0 for g in trunc)
    assert len(trunc) < 24
    both = state.view_groups(zero_std=True, truncated=True)
    assert all(is_zero_std(g) and truncated_count(g) for g in both)
    river = state.view_groups(query="RIVER")
    assert river and all("river" in g.prompt or any("river" in c.text for c in g.completions) for g in river)
    by_text = state.view_groups(query="revir")  # matches completion text only
    assert by_text and all("revir" in " ".join(c.text for c in g.completions) for g in by_text)
    adv = state.view_groups(sort="abs_advantage")
    assert [max_abs_advantage(g) for g in adv] == sorted((max_abs_advantage(g) for g in adv), reverse=True)
    low = state.view_groups(sort="lowest_mean")
    assert [g.reward_mean for g in low] == sorted(g.reward_mean for g in low)
    with pytest.raises(ValueError):
        state.view_groups(sort="bogus")


def test_newest_groups_and_helpers(kit):
    state = fed(kit.make_run(steps=2))
    newest = state.newest_groups(3)
    assert [(g.step, g.group) for g in newest] == [(2, 3), (2, 2), (2, 1)]
    assert one_line("a\nb   c", 40) == "a ⏎ b c"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"


def test_unknown_state_until_told_and_progress_kept(kit):
    state = fed(kit.starting_run())
    assert state.state == "starting"
    assert state.progress == Progress(seq=2, ts=kit.TS0 + 3, stage="engine", message="starting vLLM engine (cpu)", current=2, total=5)


def test_commands_without_changes_are_tracked_by_id():
    state = RunState()
    pause = Pause()
    state.record_sent(pause)
    assert state.pending[pause.id].kind == "pause" and state.pending[pause.id].changes == {}
    state.apply(CommandResult(command_id=pause.id, command="pause", status="applied"))
    assert pause.id not in state.pending


def test_weight_sync_lines_say_whether_they_were_verified():
    ok = WeightsSynced(version=2, step=2, duration_s=0.1, bytes=2_000_000, checksum="abc", verified=True, method="load_weights")
    skipped = WeightsSynced(version=3, step=3, duration_s=0.1, bytes=2_000_000, checksum="abc", verified=False,
                            method="load_weights (not canary-checked this time)", detail="step")
    bad = WeightsSynced(version=4, step=4, duration_s=0.1, bytes=2_000_000, checksum="abc", verified=False, method="load_weights")
    assert describe(ok)[1] == "info" and "verified" in describe(ok)[0]
    assert describe(skipped)[1] == "info" and "unchecked" in describe(skipped)[0]
    assert describe(bad)[1] == "warning" and "NOT VERIFIED" in describe(bad)[0]


def test_disconnect_turns_pending_commands_into_unanswered():
    state = RunState()
    state.on_hello(Hello(protocol=PROTOCOL_VERSION, run_id="r"))
    cmd = SetParams(temperature=0.7)
    state.record_sent(cmd)
    state.on_disconnect("backend gone")
    assert state.pending == {}
    assert state.rejections[-1].status == "unanswered" and state.rejections[-1].command_id == cmd.id
    assert state.param_status("temperature") == ("unanswered: 0.7", "rejected")


def test_a_skipped_steps_rewards_stay_out_of_the_curve():
    from backend.protocol.events import StepMetrics

    from console.state import RunState

    state = RunState()
    for step, skipped in ((1, ""), (2, "reward function judge raised ConnectionError: down"), (3, "")):
        state.apply(StepMetrics(step=step, reward_mean=0.0 if skipped else 0.5, reward_std=0.1, update_skipped=skipped,
                                rewards_by_function={"judge": 0.5}))
    assert [s for s, _, _ in state.reward_series()] == [1, 3]
    assert [s for s, _, _ in state.reward_series("judge")] == [1, 3]


def test_the_step_is_the_completed_steps_as_status_says_not_the_one_training(kit):
    run = kit.make_run(steps=5)
    cut = next(i for i, e in enumerate(run) if e.kind == "step_metrics" and e.step == 5)
    state = fed(run[:cut])  # step 5's groups are in, its update is not done
    assert 5 in state.groups_by_step and state.step == 4
    state.apply(run[cut])
    assert state.step == 5


def test_a_resume_takes_the_weight_version_back_to_the_checkpoint(kit):
    from backend.protocol.events import RunResumed

    state = fed(kit.make_run(steps=6))
    assert state.weight_version == 6
    state.apply(RunResumed(ts=kit.TS0 + 500, step=3, checkpoint="step-3", seq=9_000))
    assert state.weight_version == 3 and state.last_sync is None  # not the lost timeline's v6
    state.apply(WeightsSynced(ts=kit.TS0 + 510, version=4, step=3, duration_s=0.1, bytes=1, checksum="x", verified=True,
                              method="load_weights", seq=9_001))
    assert state.weight_version == 4


def test_no_eta_while_paused(kit):
    from console.screens.metrics import progress_heading

    state = fed(kit.make_run(steps=6))
    state.max_steps = 300
    assert "ETA" in progress_heading(state)
    state.apply(StateChanged(ts=kit.TS0 + 900, state="paused", reason="pause requested", step=6, seq=50_000))
    assert progress_heading(state) == "step 6/300 · paused"
