"""How `ls`/`status`/`ctl` name a run: live, completed, stopped, failed or crashed — from its
real files (run.json, the SQLite log, the backend's lock), never a stale RUNNING."""

import subprocess
import sys

import pytest

from backend.protocol import events as E
from backend.runstore import RunStore, write_run_meta
from tests.conftest import make_run_files


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    return tmp_path


make_run = make_run_files  # (home, run_id, *states, step=7, lock=True, checkpoint=None)


def test_ended_runs_say_how_they_ended_and_what_continues_them(home):
    from console import runs

    make_run(home, "r-done", ("running", "training"), ("finished", "completed 7 steps"))
    make_run(home, "r-stop", ("running", "training"), ("finished", "stopped at step 7"))
    make_run(home, "r-fail", ("starting", "x"), ("failed", "setup failed: EngineError: no GPU"), step=0)
    make_run(home, "r-dead", ("running", "training"))
    done, stop, fail, dead = (runs.info(r) for r in ("r-done", "r-stop", "r-fail", "r-dead"))
    assert (done.state, stop.state, fail.state, dead.state) == ("completed", "stopped", "failed", "crashed")
    assert not any(i.alive for i in (done, stop, fail, dead))
    assert "--max-steps N" in done.next and stop.next == "rl-console run --resume r-stop"
    assert fail.reason == "setup failed: EngineError: no GPU" and "start a new run" in fail.next
    assert dead.next == "rl-console run --resume r-dead" and "died while running" in dead.reason
    assert dead.describe().startswith("r-dead crashed at step 7: the backend (pid 999999) died while running")


def test_a_run_without_a_checkpoint_is_not_offered_a_resume(home):
    """`run --resume` continues from a complete checkpoint: a run that ended before its first
    one is told to start anew, wherever it is named (ls, status, the TUI's refusals)."""
    from console import runs

    make_run(home, "r-early", ("starting", "x"), ("running", "training"), step=3, checkpoint=False)
    make_run(home, "r-stop0", ("running", "training"), ("finished", "stopped at step 2"), step=2, checkpoint=False)
    make_run(home, "r-fail3", ("running", "training"), ("failed", "step failed: OOM"), step=3, checkpoint=False)
    make_run(home, "r-fail-ck", ("running", "training"), ("failed", "step failed: OOM"), step=3)
    early, stop0, fail3, fail_ck = (runs.info(r) for r in ("r-early", "r-stop0", "r-fail3", "r-fail-ck"))
    assert early.state == "crashed" and early.next == "start a new run (it has no checkpoint to resume from)"
    assert "--resume" not in early.describe()
    assert stop0.state == "stopped" and stop0.next.startswith("start a new run")
    assert fail3.next == "fix the cause and start a new run"
    assert fail_ck.next == "fix the cause, then rl-console run --resume r-fail-ck"
    # a checkpoint cut short by the crash (no rlc.json yet) does not count
    (home / "runs" / "r-early" / "checkpoints" / "step-000003").mkdir(parents=True)
    assert runs.info("r-early").next.startswith("start a new run")


def test_a_live_backend_is_running_and_cli_says_so(home):
    from console import runs

    rdir = make_run(home, "r-live", ("running", "training"))
    hold = ("import sys, time; from pathlib import Path; from backend.protocol.paths import lock_run; "
            "lock_run(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(rdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        live = runs.info("r-live")
        assert live.alive and live.state == "running" and live.next == ""
        make_run(home, "r-paused", ("running", "training"), ("paused", "paused at step 7: reward function f raised"))
        from backend.protocol.paths import lock_run

        fd = lock_run(home / "runs" / "r-paused")  # this process hosts it
        paused = runs.info("r-paused")
        assert paused.state == "paused" and paused.next.startswith("rl-console ctl r-paused resume")
        import os

        os.close(fd)
    finally:
        proc.kill()
        proc.wait()
    assert runs.info("r-live").state == "crashed"  # kill -9: the same files now read as a crash


def test_ls_status_and_ctl_print_the_truth(home):
    from tests.conftest import backend_env

    make_run(home, "r-dead", ("running", "training"))
    make_run(home, "r-fail", ("starting", "x"), ("failed", "setup failed: ValueError: bad model"), step=0)
    env = backend_env(home)
    run = lambda *a: subprocess.run([sys.executable, "-m", "console.cli", *a], env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    ls = run("ls").stdout
    assert "crashed" in ls and "rl-console run --resume r-dead" in ls and "setup failed: ValueError: bad model" in ls
    st = run("status", "r-dead").stdout
    assert "r-dead: crashed" in st and "next:   rl-console run --resume r-dead" in st
    ctl = run("ctl", "r-dead", "pause")
    assert ctl.returncode == 1 and "cannot pause: r-dead crashed at step 7" in ctl.stderr


def test_cli_edges_version_unknown_parameter_and_a_dumb_terminal(home):
    from tests.conftest import backend_env

    env = backend_env(home)
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "console.cli", *a], env={**env, **kw}, capture_output=True, text=True, timeout=60)  # noqa: E731
    assert run("--version").stdout.startswith("rl-console ")
    make_run(home, "r-live", ("running", "training"))
    bad = run("ctl", "r-live", "set", "temprature=0.7")
    assert bad.returncode == 2 and "unknown parameter 'temprature'; settable: temperature (>0…2)" in bad.stderr
    assert "learning_rate" in run("ctl", "--help").stdout  # every settable key, with its range
    dumb = run("run", TERM="dumb")
    assert dumb.returncode == 2 and "TERM=dumb" in dumb.stderr and "nothing started" in dumb.stderr
    noeq = run("run", "--headless", "--set", "sampling.temperature")
    assert noeq.returncode == 2 and noeq.stderr.startswith("rl-console: --set 'sampling.temperature': expected SECTION.FIELD=VALUE")
    assert sorted(p.name for p in (home / "runs").iterdir()) == ["r-live"]  # no run was started


def test_how_long_a_run_ran_leaves_out_the_time_between_a_stop_and_its_resume(home):
    from console import runs

    rdir = home / "runs" / "r-twice"
    rdir.mkdir(parents=True)
    store = RunStore(rdir / "events.db")
    t0 = 1_700_000_000.0
    store.append_many([E.StateChanged(ts=t0, state="starting", reason="building", step=0),
                       E.StepMetrics(ts=t0 + 100, step=5, reward_mean=0.5, reward_std=0.1),
                       E.StateChanged(ts=t0 + 101, state="finished", reason="stopped at step 5", step=5)])
    # resumed a day later, ran 30 s more
    store.append_many([E.RunResumed(ts=t0 + 86_400, step=5, checkpoint="step-5"),
                       E.StepMetrics(ts=t0 + 86_420, step=7, reward_mean=0.6, reward_std=0.1),
                       E.StateChanged(ts=t0 + 86_430, state="finished", reason="completed 7 steps", step=7)])
    store.close()
    write_run_meta(rdir, run_id="r-twice", pid=999_999, profile="p", state="finished", created=t0)
    info = runs.info("r-twice")
    assert info.state == "completed" and info.duration_s == pytest.approx(101 + 30)
    assert runs.fmt_duration(info.duration_s) == "2m11s"


def test_a_run_is_named_by_its_id_a_prefix_a_suffix_or_a_unique_piece(home):
    from console import runs

    for rid in ("demo-20261202-041515-ab12", "demo-20261202-050000-cd34", "chat-20261203-041515-ef56"):
        make_run(home, rid, ("running", "training"), ("finished", "completed 7 steps"))
    assert runs.resolve("chat") == "chat-20261203-041515-ef56"  # prefix
    assert runs.resolve("cd34") == "demo-20261202-050000-cd34"  # suffix
    assert runs.resolve("050000") == "demo-20261202-050000-cd34"  # a piece from the middle
    with pytest.raises(runs.RunNotFound, match="'041515' matches 2 runs"):
        runs.resolve("041515")
    with pytest.raises(runs.RunNotFound, match="no run matches 'zzz'"):
        runs.resolve("zzz")


def test_after_a_crash_and_resume_status_stands_at_the_checkpoint_not_the_lost_steps(home):
    from console import runs

    rdir = home / "runs" / "r-crash"
    rdir.mkdir(parents=True)
    store = RunStore(rdir / "events.db")
    store.append_many([E.StepMetrics(step=s, reward_mean=0.1 * s, reward_std=0.1) for s in range(1, 53)])  # died after 52
    store.append_many([E.RunResumed(step=50, checkpoint="step-50"),
                       E.StateChanged(state="paused", reason="paused at step 50", step=50)])
    store.close()
    write_run_meta(rdir, run_id="r-crash", pid=999_999, profile="p", state="paused")
    info = runs.info("r-crash")
    assert info.step == 50 and info.reward == pytest.approx(5.0)  # the checkpoint's step, not the dead backend's 52


def test_how_the_previous_backend_ended_is_said_unless_it_ended_cleanly():
    from backend.__main__ import previous_end
    from backend.protocol.events import StateChanged, StepMetrics

    m = StepMetrics(step=51, reward_mean=0.5, reward_std=0.1)
    assert previous_end(StateChanged(state="finished", reason="stopped"), m, 7) == ""
    assert previous_end(None, None, 7) == ""
    assert previous_end(StateChanged(state="failed", reason="engine: vLLM died"), m, 7) == \
        "the previous backend (pid 7) failed after step 51: engine: vLLM died"
    said = previous_end(StateChanged(state="running"), m, 7)
    assert said.startswith("the previous backend (pid 7) ended without a word after step 51 (its last logged state: running)")
    assert previous_end(StateChanged(state="paused"), None, 0).startswith("the previous backend ended without a word after step 0")


def test_a_run_paused_by_an_alert_says_what_the_alert_advises(home):
    """`status` of a run the memory guard paused: the need beside what is free in the reason, and
    the alert's own advice (not only `ctl resume`, which would start the update that does not fit)."""
    from backend.protocol.paths import lock_run
    from backend.runstore import RunStore
    from console import runs

    rdir = make_run(home, "r-mem", ("running", "training"))
    store = RunStore(rdir / "events.db")
    store.append_many([
        E.Alert(rule="memory_low", severity="critical", message="20,645 MB free …", step=7,
                suggestion="stop (x), then rl-console run --resume r-mem --set training.micro_batches=16 (about 17,600 MB)"),
        E.Alert(rule="zero_std", severity="warning", message="all groups equal", step=7, suggestion="raise temperature"),
        E.StateChanged(state="paused", step=7, reason="paused at step 7 (0 ms to idle the engine): host memory low: the "
                       "next step is expected to need about 257,000 MB more, 20,645 MB free of 24,105 MB (the machine)"),
    ])
    store.close()
    fd = lock_run(rdir)
    try:
        got = runs.info("r-mem")
        assert got.state == "paused" and "need about 257,000 MB more, 20,645 MB free" in got.reason
        assert got.next == ("stop (x), then rl-console run --resume r-mem --set training.micro_batches=16 (about 17,600 MB) "
                            "(from a shell: rl-console ctl r-mem resume | stop)")
    finally:
        import os

        os.close(fd)
