"""The controller's command intake at the run's edges (pure logic: no engine, no trainer): a
stop reads as `stopping` from the moment it is accepted, and commands accepted during the last
step, which never reach a step boundary, are answered when the run ends instead of leaving
their senders waiting on a closed connection."""

from backend.protocol import commands as C


def _controller(tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    store = RunStore(tmp_path / "events.db")
    ctl = Controller(load_profile(None), run_id="intake", run_dir=tmp_path, profile_name="embedded default", store=store)
    ctl.set_state("running", "training")
    return ctl, store


def _answers(store, command_id):
    return [e for e in store.read(0) if e.kind == "command_result" and e.command_id == command_id]


def test_an_accepted_stop_reads_stopping_at_once_and_a_second_is_refused(tmp_path):
    ctl, store = _controller(tmp_path)
    stop = C.Stop()
    assert ctl.submit(stop).status == "accepted"
    assert ctl.state == "stopping"
    last = [e for e in store.read(0) if e.kind == "state_changed"][-1]
    assert last.state == "stopping" and "next step boundary" in last.reason and "checkpoint first" in last.reason
    again = ctl.submit(C.Stop())
    assert again.status == "rejected" and "a stop is already pending" in again.reason
    pause = ctl.submit(C.Pause())
    assert pause.status == "rejected" and "stopping" in pause.reason


def test_commands_left_when_the_run_ends_are_answered_not_dropped(tmp_path):
    ctl, store = _controller(tmp_path)
    ck, sp = C.Checkpoint(), C.SetParams(temperature=0.5)
    assert ctl.submit(ck).status == "accepted" and ctl.submit(sp).status == "accepted"
    ctl.set_state("finished", "completed 0 steps")  # the last step ended before a boundary took them
    ctl._close_intake()
    for cmd in (ck, sp):
        final = _answers(store, cmd.id)[-1]
        assert final.status == "failed" and "the run ended (finished, step 0) before the next step boundary" in final.reason
    late = ctl.submit(C.Checkpoint())
    assert late.status == "rejected" and late.reason == "the run is finished (step 0)"
    assert ctl._queue.empty()


def test_a_stop_still_queued_when_the_run_ends_is_applied(tmp_path):
    ctl, store = _controller(tmp_path)
    stop = C.Stop(checkpoint=False)
    ctl.submit(stop)
    ctl.set_state("finished", "completed 0 steps")
    ctl._close_intake()
    assert [a.status for a in _answers(store, stop.id)] == ["accepted", "applied"]


def test_a_pause_is_answered_applied_once_the_run_is_paused(tmp_path):
    import threading
    import time

    ctl, store = _controller(tmp_path)
    pause = C.Pause()
    assert ctl.submit(pause).status == "accepted"
    boundary = threading.Thread(target=lambda: list(ctl.at_boundary(idle=lambda: None, wake=lambda: None)), daemon=True)
    boundary.start()  # the step loop's boundary: takes the pause, stays paused until a resume
    deadline = time.monotonic() + 10
    def answered() -> bool:  # (the state turns paused a moment before the answer is logged)
        return any(e.kind == "command_result" and e.command_id == pause.id and e.status == "applied" for e in store.read(0))

    while not answered():
        assert time.monotonic() < deadline, ctl.state
        time.sleep(0.01)
    events = list(store.read(0))
    paused_at = next(i for i, e in enumerate(events) if e.kind == "state_changed" and e.state == "paused")
    applied_at = next(i for i, e in enumerate(events)
                      if e.kind == "command_result" and e.command_id == pause.id and e.status == "applied")
    assert applied_at > paused_at  # "pause applied" never reaches a console before PAUSED does
    assert ctl.submit(C.Resume()).status == "accepted"
    boundary.join(10)
    assert not boundary.is_alive() and ctl.state == "running"


def test_a_command_is_answered_accepted_before_anything_it_sets_off(tmp_path):
    """The training thread may act on a pause or a stop as soon as it is queued (the run at a
    boundary): the sender's "accepted" comes first in the log, before `pausing`/`stopping`."""
    ctl, store = _controller(tmp_path)
    for cmd in (C.Pause(), C.Stop()):
        assert ctl.submit(cmd).status == "accepted"
        log = [e for e in store.read(0) if e.kind in ("command_result", "state_changed")]
        answered = next(i for i, e in enumerate(log) if e.kind == "command_result" and e.command_id == cmd.id)
        assert log[answered + 1].kind == "state_changed", log[answered:]
