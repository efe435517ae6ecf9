"""`rl-console compare` on a terminal: the interactive view (console/compare_app.py) over event
logs written by the backend's own RunStore, read through the real `compare` loader and the
CLI's run lookup. Pilot tests (metric switching, command marks, profile diff, zoom, a live
run's new steps), SVG snapshots at 80x24 and 160x48, and the CLI's choice of output.

Update the snapshots after an intended visual change with:
pytest tests/console/test_compare_view.py --snapshot-update
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from backend.protocol import events as E
from backend.protocol.paths import lock_run
from backend.runstore import RunStore
from console import cli, compare
from console.compare_app import CompareApp, CompareHelp
from console.widgets.overlay_chart import OverlayChart, dot_columns

RUN_A = "20261201-101500-000-hot"
RUN_B = "20261201-103000-000-cool"
FNS = ("char_match", "clean_stop")


def _profile(temperature: float, lr: float, beta: float) -> dict:
    return {"run": {"name": "demo", "max_steps": 40}, "sampling": {"temperature": temperature, "top_p": 1.0},
            "training": {"learning_rate": lr, "beta": beta}}


def _started(run_id: str, temperature: float, lr: float, beta: float) -> E.RunStarted:
    return E.RunStarted(run_id=run_id, profile="demo.toml", profile_data=_profile(temperature, lr, beta), model="tiny",
                        task="repeat", engine="local", reward_functions=list(FNS), reward_weights=[1.0, 1.0],
                        params={"temperature": temperature})


def _metrics(step: int, reward: float, *, kl: float | None = None, length: float = 12.0,
             total: float = 2.0) -> E.StepMetrics:
    return E.StepMetrics(step=step, reward_mean=reward, reward_std=0.1, kl=kl,
                         rewards_by_function={"char_match": reward * 0.7, "clean_stop": reward * 0.3},
                         completion_length_mean=length, times=E.StepTimes(generate=1.0, total=total))


def _set(step: int, cid: str, **changed) -> list:
    return [E.CommandResult(command_id=cid, command="set_params", status="accepted", step=step),
            E.ParamsApplied(command_id=cid, step=step, changed=changed, params=changed),
            E.CommandResult(command_id=cid, command="set_params", status="applied", step=step)]


def _command(step: int, cid: str, kind: str, status: str = "applied", reason: str = "") -> list:
    return [E.CommandResult(command_id=cid, command=kind, status="accepted", step=step),
            E.CommandResult(command_id=cid, command=kind, status=status, step=step, reason=reason)]


def _write(home, run_id, events, *, finished=True):
    rdir = home / "runs" / run_id
    store = RunStore(rdir / "events.db")
    store.append_many(events + ([E.StateChanged(state="finished", reason="completed", step=0)] if finished else []))
    store.close()
    (rdir / "run.json").write_text(json.dumps({"run_id": run_id, "pid": 0, "created": 1_700_000_000.0, "profile": "demo"}))
    return rdir


def run_a(steps: int = 40) -> list:
    """Temperature 0.9, learning: reward climbs; `set temperature=0.7` after step 12 and a
    pause / resume after step 24; KL logged (beta 0.04)."""
    events: list = [_started(RUN_A, 0.9, 1e-3, 0.04), E.StateChanged(state="running")]
    for s in range(1, steps + 1):
        events.append(_metrics(s, 0.2 + 0.6 * (1 - math.exp(-s / 12)) + 0.03 * math.sin(s),
                               kl=0.002 * s, length=30 - 0.4 * s, total=2.0 + 0.2 * math.sin(s / 3)))
        if s == 12:
            events += _set(12, "c-set", temperature=0.7)
            events += _command(12, "c-bad", "set_params", "rejected", "temperature: 9 is above 2")
        if s == 24:
            events += _command(24, "c-pause", "pause") + _command(24, "c-resume", "resume")
    return events


def run_b(steps: int = 30) -> list:
    """Temperature 0.5, slowly rising; no KL (beta 0); resumed from step 15 after having run to
    18 (the lost steps 16-18 are replaced by the resumed timeline's)."""
    def reward(s: int) -> float:
        return 0.25 + 0.008 * s + 0.02 * math.cos(s)

    events: list = [_started(RUN_B, 0.5, 5e-4, 0.0), E.StateChanged(state="running")]
    events += [_metrics(s, reward(s) if s <= 15 else 0.05, length=20 + 0.1 * s, total=1.6) for s in range(1, 19)]
    events += [E.RunResumed(step=15, checkpoint="checkpoint-15")]
    events += [_metrics(s, reward(s), length=20 + 0.1 * s, total=1.6) for s in range(16, steps + 1)]
    return events


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def two_runs(home):
    _write(home, RUN_A, run_a())
    _write(home, RUN_B, run_b())
    return home


def _app(names=(RUN_A, RUN_B), **kw) -> CompareApp:
    feed = cli.compare_feed(list(names))
    return CompareApp(feed, **kw)


def _chart(app) -> OverlayChart:
    return app.query_one(OverlayChart)


def _cells(table) -> list[list[str]]:
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


# ---- the data the view draws ---------------------------------------------------------------
def test_the_written_runs_load_as_the_view_expects(two_runs):
    feed = cli.compare_feed([RUN_A, RUN_B])
    report = feed.report()
    a, b = report["runs"]
    assert (a["state"], a["live"], b["state"]) == ("completed", False, "completed")
    assert a["steps"] == list(range(1, 41)) and b["steps"] == list(range(1, 31)) and b["resumed_from"] == [15]
    assert report["metrics"]["reward"][RUN_B][15] == pytest.approx(0.25 + 0.008 * 16 + 0.02 * math.cos(16))


def test_update_reads_only_what_the_log_gained_and_matches_a_fresh_load(home):
    """A live run is followed by `compare.update` (the events after the last one read): after
    new steps, a command and a resume it holds what a fresh `load` of the whole log holds."""
    rdir = home / "runs" / RUN_A
    store = RunStore(rdir / "events.db")
    events = run_a(steps=30)
    store.append_many(events[:20])
    run = compare.load(RUN_A, rdir / "events.db")
    seen = run.next_seq
    assert compare.update(run) is False and run.next_seq == seen  # nothing new: nothing read
    try:
        for chunk in (events[20:30], events[30:], [E.RunResumed(step=20, checkpoint="checkpoint-20")],
                      [_metrics(21, 0.9)] + _set(21, "c-after", temperature=0.3)):
            store.append_many(chunk)
            assert compare.update(run) is True
            fresh = compare.load(RUN_A, rdir / "events.db")
            assert (sorted(run.steps), run.commands, run.resumes, run.state) == \
                   (sorted(fresh.steps), fresh.commands, fresh.resumes, fresh.state)
            assert run.values("reward") == fresh.values("reward") and run.values("kl") == fresh.values("kl")
        assert sorted(run.steps) == list(range(1, 22)) and run.resumes == [20]
        assert [c.command_id for c in run.commands] == ["c-set", "c-bad", "c-after"]  # the pause after 24 was lost
    finally:
        store.close()


# ---- pilot ---------------------------------------------------------------------------------
async def test_metric_keys_overlay_each_metric_of_every_run(two_runs, kit):
    app = _app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        chart = _chart(app)
        keys = ["reward", "reward/char_match", "reward/clean_stop", "kl", "completion_length", "step_time"]
        assert app.metric_keys == keys
        assert str(chart.border_title).startswith("reward (weighted total) · 1/6")
        for key in keys:
            assert app.metric == key and str(chart.border_title).startswith(compare._title(key))
            # one curve per run, each that run's own values on the shared 1..40 axis
            assert chart.axis == list(range(1, 41))
            assert [c.letter for c in chart.curves] == ["A", "B"]
            assert [list(c.values) for c in chart.curves] == [app.report["metrics"][key][RUN_A],
                                                              app.report["metrics"][key][RUN_B]]
            await pilot.press("right")
        assert app.metric == "reward"  # wrapped around
        await pilot.press("left")
        assert app.metric == "step_time"
        await pilot.press("4")
        assert app.metric == "kl"
        assert chart.curves[1].values == (None,) * 40  # B logs no KL: no line, not a zero line
        assert all(v is not None for v in chart.curves[0].values)
        await pilot.press("5")
        assert str(chart.border_title).startswith("completion length (tokens) · 5/6")
        # the legend follows the metric: each run's last / min / max of completion length
        screen = kit.screen_text(app)
        row_a = next(line for line in screen.splitlines() if RUN_A in line)
        row_b = next(line for line in screen.splitlines() if RUN_B in line)
        assert row_a.split()[-3:] == ["14.0", "14.0", "29.6"] and "1–40" in row_a  # 30 - 0.4 s, steps 1..40
        assert row_b.split()[-3:] == ["23.0", "20.1", "23.0"] and "1–30" in row_b


async def test_commands_are_marked_at_the_step_they_took_effect_and_listed(two_runs, kit):
    app = _app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        chart = _chart(app)
        marks = {(m.letter, m.step) for m in chart.marks}
        # the set after step 12 acts from 13; the pause and resume after 24 from 25; B resumed
        # from 15 (its replaced timeline starts at 16); the rejected set is not marked
        assert marks == {("A", 13), ("A", 25), ("↻", 16)}
        width, height = chart.size
        lines = chart.plain_lines(width, height)
        plot_w = width - 8
        xs = dot_columns(40, plot_w * 2)
        row = lines[-2]
        for letter, step in (("A", 13), ("A", 25), ("↻", 16)):
            assert row[8 + xs[step - 1] // 2] == letter, (letter, step, row)
        # a guide runs up the plot in the column of the set (where no curve is drawn)
        col = 8 + xs[12] // 2
        assert any(line[col] == "┊" for line in lines[:-2])
        cmds = _cells(app.query_one("#cmp-commands"))
        assert cmds == [["A", "13", "set temperature=0.7"],
                        ["A", "13", "set_params (rejected: temperature: 9 is above 2)"],
                        ["B", "16", "resumed from step 15"],
                        ["A", "25", "pause"], ["A", "25", "resume"]]
        assert app.windows() == [None]  # z offers no window as long as the run

        # enter on a command: the step cursor goes to the step it took effect, and the legend
        # reads each run's value there
        table = app.query_one("#cmp-commands")
        table.focus()
        await pilot.press("down", "down", "enter")  # B's resume, from step 16
        assert app.cursor == 16 and "▲ step 16" in str(chart.border_title)
        screen = kit.screen_text(app)
        assert "▲16" in screen.splitlines()[1]  # the legend's column
        row_b = next(line for line in screen.splitlines() if RUN_B in line)
        assert row_b.split()[-2] == f"{app.report['metrics']['reward'][RUN_B][15]:.3f}"
        lines = chart.plain_lines(*chart.size)
        assert lines[-1][8 + xs[15] // 2:].startswith("▲16")  # under its column
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.cursor == 14
        await pilot.press("right_curly_bracket", "right_curly_bracket", "right_curly_bracket")
        assert app.cursor == 40  # held at the last step
        await pilot.press("escape")
        assert app.cursor is None and "▲" not in str(chart.border_title)


async def test_profile_diff_lists_the_fields_the_runs_differ_in(two_runs):
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        rows = _cells(app.query_one("#cmp-diff"))
        assert rows == [["sampling.temperature", "0.9", "0.5"], ["training.beta", "0.04", "0"],
                        ["training.learning_rate", "0.001", "0.0005"]]
        assert "3 fields" in str(app.query_one("#cmp-diff").border_title)


async def test_zoom_shows_the_last_steps_and_their_marks(home):
    _write(home, RUN_A, run_a(steps=120))
    _write(home, RUN_B, run_b())
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        chart = _chart(app)
        assert chart.axis[0] == 1 and chart.axis[-1] == 120 and app.windows() == [None, 50]
        await pilot.press("z")
        assert chart.axis == list(range(71, 121)) and "last 50 steps" in str(chart.border_title)
        assert [len(c.values) for c in chart.curves] == [50, 50]
        assert chart.curves[0].values == tuple(app.report["metrics"]["reward"][RUN_A][70:])
        # the marks before the window are not drawn
        assert chart.marks and not chart.place_marks(dot_columns(50, 144), 72)
        await pilot.press("z")
        assert chart.axis[0] == 1


async def test_the_metric_list_on_a_wide_terminal_picks_by_click(two_runs):
    app = _app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert app.query_one("#cmp-metrics").display
        await pilot.click("#cmp-metrics", offset=(4, 4))  # border, then the 4th line: KL
        assert app.metric == "kl" and str(_chart(app).border_title).startswith("KL · 4/6")
    async with _app().run_test(size=(80, 24)) as pilot:  # narrow: the chart's title says where it is
        await pilot.pause()
        assert not pilot.app.query_one("#cmp-metrics").display


async def test_help_lists_the_keys(two_runs):
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, CompareHelp)
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareHelp)
        await pilot.press("q")
    assert app.return_code == 0


async def test_a_live_run_is_re_read_and_its_new_steps_drawn(home):
    """A live run (its backend holds the lock, its writer is open): steps appended to its log
    appear in the view without a key, read by the worker thread; once it ends, the view says
    so and stops reading."""
    _write(home, RUN_B, run_b())
    rdir = home / "runs" / RUN_A
    store = RunStore(rdir / "events.db")
    store.append_many(run_a(steps=3))
    (rdir / "run.json").write_text(json.dumps({"run_id": RUN_A, "pid": os.getpid(), "created": time.time()}))
    fd = lock_run(rdir)
    try:
        app = _app(refresh_s=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            chart = _chart(app)
            assert app.report["runs"][0]["live"] is True and app.report["runs"][0]["steps"] == [1, 2, 3]
            assert "live: A" in str(app.query_one("#cmp-head").render())
            store.append_many([_metrics(s, 0.5 + s / 100, kl=0.01) for s in (4, 5)] + _set(5, "c-live", temperature=0.6))
            await _wait(pilot, lambda: app.report["runs"][0]["steps"][-1] == 5)
            assert app.report["metrics"]["reward"][RUN_A][3:5] == pytest.approx([0.54, 0.55])
            assert ("A", 6) in {(m.letter, m.step) for m in chart.marks}  # acts from step 6: past the end for now
            assert any(row[2] == "set temperature=0.6" for row in _cells(app.query_one("#cmp-commands")))
            # it ends: the next look says so and the reading stops
            store.append(E.StateChanged(state="finished", reason="completed", step=5))
            os.close(fd)
            fd = -1
            await _wait(pilot, lambda: not app.report["runs"][0]["live"])
            assert app.report["runs"][0]["state"] == "completed"
            reads = app.reads
            await pilot.pause(0.4)
            assert app.reads == reads
    finally:
        if fd >= 0:
            os.close(fd)
        store.close()


async def test_a_failed_read_is_shown_and_the_next_one_recovers(home, monkeypatch, kit):
    """A live run's read that fails (here: the first one raises) says so in the header; the
    view keeps the curves it had and the next read brings the new steps."""
    _write(home, RUN_B, run_b())
    rdir = home / "runs" / RUN_A
    store = RunStore(rdir / "events.db")
    store.append_many(run_a(steps=3))
    (rdir / "run.json").write_text(json.dumps({"run_id": RUN_A, "pid": os.getpid(), "created": time.time()}))
    fd = lock_run(rdir)
    real_update, calls = compare.update, []

    def failing_once(run, **kw):
        calls.append(run.label)
        if len(calls) == 1:
            raise RuntimeError("disk went away")
        return real_update(run, **kw)

    try:
        app = _app(refresh_s=0.3)
        monkeypatch.setattr(compare, "update", failing_once)
        async with app.run_test(size=(80, 24)) as pilot:
            await _wait(pilot, lambda: "disk went away" in app.error)
            assert "disk went away" in kit.screen_text(app).splitlines()[0]
            assert app.report["runs"][0]["steps"] == [1, 2, 3]
            store.append(_metrics(4, 0.6))
            await _wait(pilot, lambda: app.report["runs"][0]["steps"][-1] == 4)
            await _wait(pilot, lambda: app.error == "")
    finally:
        os.close(fd)
        store.close()


async def _wait(pilot, pred, timeout=30.0):  # generous: a loaded 2-core CI box runs engines beside it
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        await pilot.pause(0.05)


# ---- snapshots -----------------------------------------------------------------------------
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
def test_compare_view_snapshot(snap_compare, two_runs, size):
    assert snap_compare(_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_compare_view_per_function_snapshot(snap_compare, two_runs, size):
    """reward: char_match, the commands and the resume marked, and enter on the first command:
    the step cursor at the step it took effect (13), read out in the legend."""
    assert snap_compare(_app(), terminal_size=size, press=["right", "enter"])


def test_compare_help_snapshot(snap_compare, two_runs):
    assert snap_compare(_app(), terminal_size=(80, 24), press=["question_mark"])


# ---- the CLI's choice ----------------------------------------------------------------------
def test_cli_prints_the_table_when_stdout_is_not_a_terminal(two_runs, capsys):
    assert cli.main(["compare", RUN_A, RUN_B]) == 0
    out = capsys.readouterr().out
    assert out.startswith("runs:") and "sampling.temperature    A=0.9  B=0.5" in out
    row = next(line for line in out.splitlines() if line.split()[:2] == ["13", "A"])
    assert row.endswith("set temperature=0.7")


def test_cli_on_a_terminal_opens_the_view_and_no_tui_prints(two_runs, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm-256color")
    seen = {}
    real_run = CompareApp.run

    def headless_run(self, **kw):
        async def look_and_quit(pilot):
            await pilot.pause()
            seen["title"] = str(pilot.app.query_one(OverlayChart).border_title)
            seen["runs"] = [r["run"] for r in pilot.app.report["runs"]]
            await pilot.press("q")

        return real_run(self, headless=True, size=(80, 24), auto_pilot=look_and_quit)

    monkeypatch.setattr(CompareApp, "run", headless_run)
    assert cli.main(["compare", RUN_A, RUN_B]) == 0
    assert seen == {"title": seen["title"], "runs": [RUN_A, RUN_B]} and seen["title"].startswith("reward (weighted total)")
    capsys.readouterr()
    seen.clear()
    assert cli.main(["compare", RUN_A, RUN_B, "--no-tui"]) == 0
    out = capsys.readouterr().out
    assert not seen and "reward (weighted total)" in out and "profile diff" in out and "▲" in out
    assert cli.main(["compare", RUN_A, RUN_B, "--table"]) == 0
    assert capsys.readouterr().out.startswith("runs:") and not seen
    assert json.loads((cli.main(["compare", RUN_A, RUN_B, "--json"]), capsys.readouterr().out)[1])["compare"] == 1
    with pytest.raises(SystemExit):
        cli.main(["compare", RUN_A, RUN_B, "--json", "--no-tui"])
