"""`rl-console compare`: alignment, profile diff and command marks, on logs written through the
real RunStore, and the CLI's answers (no engine needed: the events are what a run writes)."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from backend.protocol import events as E
from backend.protocol.paths import lock_run
from backend.runstore import RunStore
from console import compare
from console.cli import main


def _profile(temperature: float, **extra) -> dict:
    data = {"run": {"name": "demo", "max_steps": 10}, "sampling": {"temperature": temperature, "top_p": 1.0},
            "training": {"learning_rate": 1e-3}}
    for dotted, value in extra.items():
        section, name = dotted.split("__")
        data.setdefault(section, {})[name] = value
    return data


def _metrics(step: int, reward: float, *, fns=("char_match", "clean_stop"), kl=None, skipped="") -> E.StepMetrics:
    return E.StepMetrics(step=step, reward_mean=reward, reward_std=0.1, kl=kl, update_skipped=skipped,
                         rewards_by_function={f: reward / (i + 1) for i, f in enumerate(fns)},
                         completion_length_mean=4.0 + step, times=E.StepTimes(generate=1.0, total=2.0 + step / 10))


def _write_run(home, run_id, events, *, finished=True):
    rdir = home / "runs" / run_id
    store = RunStore(rdir / "events.db")
    store.append_many(events + ([E.StateChanged(state="finished", reason="completed", step=0)] if finished else []))
    store.close()
    (rdir / "run.json").write_text(json.dumps({"run_id": run_id, "pid": 0, "created": time.time(), "profile": "p"}))
    return rdir


def _started(run_id, temperature, fns=("char_match", "clean_stop"), **extra):
    return E.RunStarted(run_id=run_id, profile="embedded default", profile_data=_profile(temperature, **extra),
                        model="tiny", task="repeat", engine="local", reward_functions=list(fns),
                        reward_weights=[1.0] * len(fns), params={"temperature": temperature})


def _set(step, cid, **changed):
    return [E.CommandResult(command_id=cid, command="set_params", status="accepted", step=step),
            E.ParamsApplied(command_id=cid, step=step, changed=changed, params=changed),
            E.CommandResult(command_id=cid, command="set_params", status="applied", step=step)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    return tmp_path


def _load(home, run_id):
    return compare.load(run_id, home / "runs" / run_id / "events.db")


def test_curves_align_on_the_shared_step_axis(home):
    _write_run(home, "a", [_started("a", 0.9)] + [_metrics(s, 0.1 * s) for s in range(1, 5)])
    _write_run(home, "b", [_started("b", 0.5, fns=("char_match", "clean_stop", "extra"))]
               + [_metrics(s, 0.2 * s, fns=("char_match", "clean_stop", "extra"), kl=0.01 * s) for s in range(1, 7)])
    report = compare.build([_load(home, "a"), _load(home, "b")])
    assert report["steps"] == [1, 2, 3, 4, 5, 6]
    assert [r["steps"] for r in report["runs"]] == [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6]]
    assert list(report["metrics"]) == ["reward", "reward/char_match", "reward/clean_stop", "reward/extra",
                                       "kl", "completion_length", "step_time"]
    assert report["metrics"]["reward"]["a"][:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert report["metrics"]["reward"]["a"][4:] == [None, None]  # a stopped at step 4
    assert report["metrics"]["reward"]["b"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.2])
    assert report["metrics"]["reward/clean_stop"]["b"][1] == pytest.approx(0.2)
    assert report["metrics"]["reward/extra"]["a"] == [None] * 6  # a has no such function
    assert report["metrics"]["kl"]["a"] == [None] * 6 and report["metrics"]["kl"]["b"][5] == pytest.approx(0.06)
    assert report["metrics"]["step_time"]["a"][0] == pytest.approx(2.1)
    assert report["summary"]["b"]["reward"] == pytest.approx({"first": 0.2, "last": 1.2, "min": 0.2, "max": 1.2, "mean": 0.7})
    assert json.loads(json.dumps(report)) == report  # plain JSON


def test_profile_diff_lists_only_what_differs(home):
    _write_run(home, "a", [_started("a", 0.9, training__beta=0.0)] + [_metrics(1, 0.1)])
    _write_run(home, "b", [_started("b", 0.5)] + [_metrics(1, 0.1)])
    diff = compare.build([_load(home, "a"), _load(home, "b")])["profile_diff"]
    assert diff == [
        {"key": "sampling.temperature", "values": {"a": 0.9, "b": 0.5}, "absent": []},
        {"key": "training.beta", "values": {"a": 0.0}, "absent": ["b"]},
    ]
    assert compare.profile_diff([_load(home, "a"), _load(home, "a")]) == []


def test_commands_are_marked_where_they_acted(home):
    events = [_started("a", 0.9), _metrics(1, 0.1), _metrics(2, 0.2)] + _set(2, "c1", temperature=0.7)
    events += [E.CommandResult(command_id="c2", command="set_params", status="rejected", reason="temperature: too big", step=2),
               _metrics(3, 0.3),
               E.CommandResult(command_id="c3", command="pause", status="accepted", step=3),
               E.CommandResult(command_id="c3", command="pause", status="applied", step=3), _metrics(4, 0.4)]
    _write_run(home, "a", events)
    _write_run(home, "b", [_started("b", 0.5)] + [_metrics(s, 0.1) for s in range(1, 5)])
    report = compare.build([_load(home, "a"), _load(home, "b")])
    cmds = [(c["run"], c["command_id"], c["command"], c["status"], c["step"], c["first_step_affected"], c["changed"])
            for c in report["commands"]]
    assert cmds == [("a", "c1", "set_params", "applied", 2, 3, {"temperature": 0.7}),
                    ("a", "c2", "set_params", "rejected", 2, 3, {}),
                    ("a", "c3", "pause", "applied", 3, 4, {})]
    table = compare.render_table(report)
    step3 = next(l for l in table.splitlines() if l.split()[:2] == ["3", "A"])
    assert step3.endswith("set temperature=0.7")  # marked on the first step it affected, not the rejection
    assert next(l for l in table.splitlines() if l.split()[:2] == ["4", "A"]).endswith("pause")
    assert "after step 2: set_params (rejected: temperature: too big)" in table


def test_a_resume_replaces_the_lost_timeline(home):
    events = [_started("a", 0.9)] + [_metrics(s, 0.1 * s) for s in range(1, 6)] + _set(4, "lost", temperature=0.3)
    events += [E.RunResumed(step=3, checkpoint="checkpoint-3"), _metrics(4, 0.9)]
    _write_run(home, "a", events)
    run = _load(home, "a")
    assert sorted(run.steps) == [1, 2, 3, 4] and run.steps[4].reward_mean == 0.9  # step 5 was lost, 4 run again
    assert run.commands == [] and run.resumes == [3]


def test_skipped_updates_leave_the_reward_out_but_keep_the_time(home):
    _write_run(home, "a", [_started("a", 0.9), _metrics(1, 0.1), _metrics(2, 0.0, skipped="reward failed")])
    _write_run(home, "b", [_started("b", 0.5), _metrics(1, 0.1), _metrics(2, 0.2)])
    report = compare.build([_load(home, "a"), _load(home, "b")])
    assert report["metrics"]["reward"]["a"] == [pytest.approx(0.1), None]
    assert report["metrics"]["reward/char_match"]["a"][1] is None
    assert report["metrics"]["step_time"]["a"][1] == pytest.approx(2.2)
    assert report["runs"][0]["skipped_steps"] == [2]


def test_too_few_runs_and_runs_without_steps_are_refused(home):
    _write_run(home, "a", [_started("a", 0.9), _metrics(1, 0.1)])
    _write_run(home, "empty", [_started("empty", 0.5)], finished=False)
    with pytest.raises(compare.CompareError, match="at least two runs"):
        compare.build([_load(home, "a")])
    with pytest.raises(compare.CompareError, match="empty has no steps yet"):
        compare.build([_load(home, "a"), _load(home, "empty")])
    (home / "runs" / "new").mkdir()  # started, no event yet
    with pytest.raises(compare.CompareError, match=r"new has no steps yet \(starting\)"):
        compare.build([_load(home, "a"), _load(home, "new")])
    _write_run(home, "dead", [_started("dead", 0.5), E.StateChanged(state="failed", reason="setup failed: X", step=0)],
               finished=False)
    with pytest.raises(compare.CompareError, match=r"dead ended \(failed\) before its first step: it has nothing to compare"):
        compare.build([_load(home, "a"), _load(home, "dead")])


def test_sparkline_scales_and_buckets():
    assert compare.sparkline([0.0, 0.5, 1.0], 0.0, 1.0, 10) == "▁▅█"
    assert compare.sparkline([0.0, None, 1.0], 0.0, 1.0, 10) == "▁ █"
    assert compare.sparkline([0.0, 0.0, 1.0, 1.0], 0.0, 1.0, 2) == "▁█"  # two steps per column
    assert compare.sparkline([2.0, 2.0], 2.0, 2.0, 5) == "▁▁"  # flat


def test_rich_rendering_overlays_runs_and_marks_commands(home):
    from rich.console import Console

    _write_run(home, "a", [_started("a", 0.9), _metrics(1, 0.1), _metrics(2, 0.2)] + _set(2, "c1", temperature=0.7)
               + [_metrics(3, 0.8)])
    _write_run(home, "b", [_started("b", 0.5)] + [_metrics(s, 0.5) for s in range(1, 4)])
    out = io.StringIO()
    compare.render_rich(compare.build([_load(home, "a"), _load(home, "b")]), Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    assert "reward (weighted total)" in text and "reward: char_match" in text and "step time (s)" in text
    reward_block = text.split("reward (weighted total)")[1].split("reward: char_match")[0]
    assert " A ▁▁▁▁▂▂▂▂████" in reward_block and " B ▅▅▅▅▅▅▅▅▅▅▅▅" in reward_block  # one scale for both runs
    assert "\n" + " " * 11 + "▲\n" in reward_block  # under step 3 of run A, the first step the set affected
    assert "sampling.temperature" in text and "set temperature=0.7" in text


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_compare_json_table_and_errors(home, capsys):
    _write_run(home, "20261201-100000-000-demo", [_started("x", 0.9)] + [_metrics(s, 0.1 * s) for s in range(1, 4)])
    rdir = _write_run(home, "20261201-110000-000-demo", [_started("y", 0.5)] + [_metrics(s, 0.2) for s in range(1, 3)])
    _write_run(home, "20261201-120000-000-new", [_started("z", 0.5)], finished=False)

    code, out, _ = _cli(["compare", "20261201-100000", str(rdir), "--json"], capsys)  # an id prefix and a run directory
    assert code == 0
    report = json.loads(out)
    assert report["compare"] == compare.REPORT_VERSION
    assert [r["run"] for r in report["runs"]] == ["20261201-100000-000-demo", "20261201-110000-000-demo"]
    assert [r["state"] for r in report["runs"]] == ["completed", "completed"] and report["steps"] == [1, 2, 3]

    code, out, _ = _cli(["compare", "20261201-100000", str(rdir / "events.db")], capsys)  # not a terminal: the table
    assert code == 0 and out.startswith("runs:") and "sampling.temperature  A=0.9  B=0.5" in out
    rows = [line.split() for line in out.split("\nstep ")[1].split("\n\n")[0].splitlines()[1:]]
    assert [r[:3] for r in rows] == [["1", "A", "0.1"], ["1", "B", "0.2"], ["2", "A", "0.2"], ["2", "B", "0.2"], ["3", "A", "0.3"]]

    assert _cli(["compare", "20261201-100000"], capsys)[0:1] == (2,)
    code, _, err = _cli(["compare", "20261201-100000", "nosuchrun"], capsys)
    assert code == 2 and "no run matches 'nosuchrun'" in err
    code, _, err = _cli(["compare", "20261201-100000", "20261201-100000-000-demo"], capsys)
    assert code == 2 and "same run" in err
    code, _, err = _cli(["compare", "20261201-100000", "20261201-120000"], capsys)
    assert code == 1 and "20261201-120000-000-new ended (crashed) before its first step" in err  # no backend alive
    bad = home / "junk.db"
    bad.write_text("not a database" * 40)
    code, _, err = _cli(["compare", "20261201-100000", str(bad)], capsys)
    assert code == 1 and "not a readable event log" in err and str(bad) in err
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0 and "events.db" in capsys.readouterr().out


def test_cli_compare_a_live_run(home, capsys):
    """A run whose backend is alive (holds the run lock, its writer open) compares as it stands."""
    _write_run(home, "done", [_started("d", 0.9)] + [_metrics(s, 0.1) for s in range(1, 4)])
    rdir = home / "runs" / "live"
    store = RunStore(rdir / "events.db")
    store.append_many([_started("l", 0.5), E.StateChanged(state="running"), _metrics(1, 0.3)])
    (rdir / "run.json").write_text(json.dumps({"run_id": "live", "pid": os.getpid(), "created": time.time()}))
    fd = lock_run(rdir)
    try:
        code, out, _ = _cli(["compare", "done", "live", "--json"], capsys)
        assert code == 0
        live = json.loads(out)["runs"][1]
        assert live["live"] is True and live["state"] == "running" and live["steps"] == [1]
        store.append(_metrics(2, 0.4))  # the next step appears on the next compare
        assert json.loads(_cli(["compare", "done", "live", "--json"], capsys)[1])["runs"][1]["steps"] == [1, 2]
    finally:
        os.close(fd)
        store.close()


def test_an_event_from_a_newer_backend_is_left_out_and_counted(home):
    _write_run(home, "a", [_started("a", 0.9), _metrics(1, 0.1)])
    _write_run(home, "b", [_started("b", 0.5), _metrics(1, 0.2)])
    db = home / "runs" / "a" / "events.db"
    body = json.loads(_metrics(2, 0.9).model_dump_json()) | {"v": 1, "seq": 3, "new_field": 1}
    con = __import__("sqlite3").connect(db)
    con.execute("INSERT INTO events VALUES (3, 0.0, 'step_metrics', ?)", (json.dumps(body),))
    con.commit()
    con.close()
    report = compare.build([_load(home, "a"), _load(home, "b")])
    assert report["runs"][0]["steps"] == [1] and report["runs"][0]["undecodable_events"] == 1
    assert "1 events of a newer rl-console left out" in compare.render_table(report)


def test_ruler_labels_steps_at_their_columns():
    assert compare.ruler([1, 2, 3], 12) == "1   2   3"  # 4 columns a step: each labelled
    assert compare.ruler(list(range(1, 31)), 30) == "1     7     13    19    25"
    assert compare.ruler(list(range(1, 201)), 50).startswith("1     25    49    73")  # 4 steps a column
    assert compare.ruler([5, 10, 400], 12) == "5   10  400"  # the steps the runs have, not a count


def test_a_resume_is_marked_where_the_resumed_timeline_starts(home):
    from rich.console import Console

    _write_run(home, "a", [_started("a", 0.9)] + [_metrics(s, 0.1) for s in range(1, 5)]
               + [E.RunResumed(step=2, checkpoint="checkpoint-2")] + [_metrics(s, 0.2) for s in range(3, 5)])
    _write_run(home, "b", [_started("b", 0.5)] + [_metrics(s, 0.1) for s in range(1, 5)])
    report = compare.build([_load(home, "a"), _load(home, "b")])
    assert report["runs"][0]["resumed_from"] == [2]
    row = next(l for l in compare.render_table(report).splitlines() if l.split()[:2] == ["3", "A"])
    assert row.endswith("resumed from step 2")
    out = io.StringIO()
    compare.render_rich(report, Console(file=out, width=100, color_system=None))
    assert "\n" + " " * 11 + "↻\n" in out.getvalue()  # under step 3: 4 columns a step


def test_tries_are_listed_not_marked_built_in_rewards_are_named_commands_follow_their_steps(home):
    events = [_started("a", 0.9), _metrics(1, 0.1)]
    events += [E.CommandResult(command_id="p1", command="pause", status="accepted", step=1),
               E.CommandResult(command_id="p2", command="pause", status="rejected", reason="a pause is already pending", step=1),
               _metrics(2, 0.2),
               E.CommandResult(command_id="p1", command="pause", status="applied", step=2),
               E.CommandResult(command_id="t1", command="try", status="accepted", step=2),
               E.CommandResult(command_id="t1", command="try", status="applied", step=2), _metrics(3, 0.3)]
    _write_run(home, "a", events)
    b = _started("b", 0.9)
    b.profile_data["task"] = {"reward_funcs": ["mytask:score"]}
    _write_run(home, "b", [b] + [_metrics(s, 0.1, fns=("score",)) for s in range(1, 4)])
    a_run, b_run = _load(home, "a"), _load(home, "b")
    a_run.profile_data["task"] = {"reward_funcs": []}  # the embedded default lists none: its task's own ran
    report = compare.build([a_run, b_run])
    assert [(c["command_id"], c["step"]) for c in report["commands"]] == [("p2", 1), ("p1", 2), ("t1", 2)]
    marks = compare._marks(report)
    assert [c["command_id"] for c in marks[("a", 3)]] == ["p1"]  # the try is operator activity, not a change
    diff = {d["key"]: d["values"] for d in report["profile_diff"]}
    assert diff["task.reward_funcs"] == {"a": ["char_match (built in)", "clean_stop (built in)"], "b": ["mytask:score"]}


def test_a_resume_that_ran_with_other_values_is_marked_not_passed_off_as_the_profile(home):
    """A resumed run's newest run_started carries the live values set mid-run and any --set of the
    resume: the diff shows the profile it started with, and what the resume changed, marked."""
    a = [_started("a", 1.0)] + [_metrics(s, 0.1) for s in (1, 2, 3)]
    a += [E.RunResumed(step=2, checkpoint="checkpoint-2"), _started("a", 0.8, training__micro_batches=2), _metrics(3, 0.2)]
    _write_run(home, "a", a)
    _write_run(home, "b", [_started("b", 1.0, training__micro_batches=1)] + [_metrics(s, 0.1) for s in (1, 2, 3)])
    diff = {d["key"]: d for d in compare.build([_load(home, "a"), _load(home, "b")])["profile_diff"]}
    assert diff["sampling.temperature"]["values"] == {"a": "1.0 → 0.8 (from the resume at step 2)", "b": 1.0}
    assert diff["training.micro_batches"]["values"] == {"a": "– → 2 (from the resume at step 2)", "b": 1}


def test_a_resume_of_a_built_in_task_with_more_steps_shows_the_steps_not_a_reward_change(home):
    """Built-in reward functions are named the same way before and after a resume (no change is
    invented), and the resume's --max-steps is shown."""
    a = [_started("a", 1.0, task__reward_funcs=[])] + [_metrics(s, 0.1) for s in (1, 2, 3)]
    a += [E.RunResumed(step=3, checkpoint="checkpoint-3"), _started("a", 1.0, task__reward_funcs=[], run__max_steps=20),
          _metrics(4, 0.2)]
    _write_run(home, "a", a)
    _write_run(home, "b", [_started("b", 1.0, task__reward_funcs=[])] + [_metrics(s, 0.1) for s in (1, 2, 3)])
    diff = {d["key"]: d["values"] for d in compare.build([_load(home, "a"), _load(home, "b")])["profile_diff"]}
    assert "task.reward_funcs" not in diff
    assert diff["run.max_steps"] == {"a": "10 → 20 (from the resume at step 3)", "b": 10}

