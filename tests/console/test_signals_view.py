"""Signals on the metrics screen (in-group diversity, reward-hacking signs) and an alert's
evidence groups (`a`: the alerts, Enter: the samples screen on the groups that triggered it)."""

from __future__ import annotations

import pytest

from backend.protocol.events import Alert, StepMetrics
from console.app import RLConsoleApp
from console.screens.alerts import AlertsModal
from console.screens.metrics import MetricsScreen, signal_series
from console.screens.samples import SamplesScreen
from console.state import RunState
from console.widgets.alerts_table import AlertsTable
from console.widgets.groups_table import GroupsTable
from console.widgets.metrics_grid import MetricsGrid, trend_arrow

EVIDENCE = [[10, 1], [11, 2], [12, 0]]


def signals_run(kit, *, steps: int = 12, ground_truth: bool = True) -> list:
    """The conftest run with the signals in every StepMetrics: diversity collapsing, length
    correlation rising; a length_hacking alert with evidence at the last step."""
    events = kit.make_run(steps=steps, alert_at=None)
    out = []
    for e in events:
        if isinstance(e, StepMetrics):
            s = e.step
            e = e.model_copy(update={
                "distinct_ratio": max(1.0 - 0.06 * s, 0.2), "group_overlap": min(0.1 + 0.05 * s, 1.0),
                "repetition": 0.02 * s, "reward_length_corr": -0.2 + 0.09 * s,
                "ground_truth_mean": 0.4 if ground_truth else None,
                "evidence": {"reward_length_corr": [1, 2]} if s >= 10 else {},
            })
        out.append(e)
    last_ts = out[-1].ts
    out.append(Alert(ts=last_ts + 0.5, rule="length_hacking", severity="warning", step=steps, metric="reward_length_corr",
                     value=0.88, threshold=0.8, message="reward follows completion length (corr 0.88 for 3 steps)",
                     suggestion="check the reward functions for a length bias", evidence=EVIDENCE))
    out.append(Alert(ts=last_ts + 0.6, rule="slow_step", severity="info", step=steps, message="step took 3x the median"))
    return [e.model_copy(update={"seq": i}) for i, e in enumerate(out)]


# -- pure ---------------------------------------------------------------------------------------

def test_signal_series_follow_the_steps_and_leave_out_an_absent_ground_truth(kit):
    state = RunState()
    for event in signals_run(kit):
        state.apply(event)
    series = {s.name: s for s in signal_series(state)}
    assert list(series) == ["distinct", "overlap", "repetition", "len↔reward", "ground truth"]
    assert series["distinct"].values[0] == pytest.approx(94.0) and series["distinct"].values[-1] == pytest.approx(28.0)
    assert series["len↔reward"].values[-1] == pytest.approx(0.88)
    assert all(s.trend for s in series.values())
    state = RunState()
    for event in signals_run(kit, ground_truth=False):
        state.apply(event)
    assert [s.name for s in signal_series(state)] == ["distinct", "overlap", "repetition", "len↔reward"]


def test_trend_arrow():
    assert trend_arrow([1.0] * 4) == ""  # too few values
    assert trend_arrow([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]) == "↑"
    assert trend_arrow([5, 5, 5, 5, 5, 1, 1, 1, 1, 1]) == "↓"
    assert trend_arrow([1, 2, 1.5, 1, 2, 1, 2, 1.5, 2, 1]) == "→"  # noise around one level


def test_view_groups_can_keep_only_evidence_pairs(kit):
    state = RunState()
    for event in signals_run(kit):
        state.apply(event)
    shown = state.view_groups(only=frozenset((s, g) for s, g in EVIDENCE))
    assert [(g.step, g.group) for g in shown] == [(12, 0), (11, 2), (10, 1)]


# -- the metrics screen ---------------------------------------------------------------------------

async def test_metrics_show_the_signals_with_trends_and_i_opens_their_page(kit):
    source = kit.Source(signals_run(kit))
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("m")
        await kit.settle(pilot)
        assert isinstance(app.screen, MetricsScreen)
        text = kit.screen_text(app)
        assert "distinct      28% ↓" in text
        assert "overlap       0.70 ↑" in text
        assert "len↔reward    +0.88 ↑" in text
        assert "ground truth  0.400 →" in text
    source = kit.Source(signals_run(kit))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:  # 80x24: the signals are past the essentials; i shows them
        await kit.settle(pilot, source)
        await pilot.press("m")
        await kit.settle(pilot)
        assert "len↔reward" not in kit.screen_text(app)
        await pilot.press("i")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "signals (i: all)" in text
        for name in ("reward", "zero-std", "distinct", "overlap", "repetition", "len↔reward", "ground truth"):
            assert name in text, name
        assert [s.name for s in app.screen.query_one(MetricsGrid)._series][:7] == [
            "reward", "zero-std", "distinct", "overlap", "repetition", "len↔reward", "ground truth"]
        await pilot.press("i")
        await kit.settle(pilot)
        assert "signals (i: all)" not in kit.screen_text(app)


async def test_an_older_backend_without_signals_says_so(kit):
    source = kit.Source(kit.make_run(steps=4))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("m", "i")
        await kit.settle(pilot)
        assert "distinct      –  not computed yet" in kit.screen_text(app)
        assert "ground truth" not in kit.screen_text(app)


# -- alerts and their evidence ----------------------------------------------------------------------

async def test_a_lists_alerts_and_enter_opens_the_evidence_groups(kit):
    source = kit.Source(signals_run(kit))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("a")
        await kit.settle(pilot)
        modal = app.screen
        assert isinstance(modal, AlertsModal)
        table = modal.query_one(AlertsTable)
        assert table.row_count == 2
        assert table.get_row_at(0)[2] == "slow_step" and table.get_row_at(0)[3] == "–"  # newest first
        assert table.get_row_at(1)[2] == "length_hacking" and table.get_row_at(1)[3] == "3 grp"
        await pilot.press("enter")  # no evidence: says so, stays
        await kit.settle(pilot)
        assert app.screen is modal and "carries no evidence groups" in kit.screen_text(app)
        await pilot.press("down")
        await kit.settle(pilot)
        assert "evidence: s10 g1, s11 g2, s12 g0" in kit.screen_text(app)
        await pilot.press("enter")
        await kit.settle(pilot)
        samples = app.screen
        assert isinstance(samples, SamplesScreen)
        groups = samples.query_one(GroupsTable)
        assert [groups.get_row_at(r)[0] for r in range(groups.row_count)] == ["s12 g0", "s11 g2", "s10 g1"]
        assert "evidence [length_hacking] step 12: 3/3 held (esc clears)" in kit.screen_text(app)
        await pilot.press("escape")  # clears it
        await kit.settle(pilot)
        assert groups.row_count == 48 and "evidence" not in kit.screen_text(app)


async def test_evidence_older_than_the_groups_held_is_counted(kit):
    events = signals_run(kit)
    events[-2] = events[-2].model_copy(update={"evidence": [[1, 0], *EVIDENCE]})
    source = kit.Source(events)
    app = RLConsoleApp(source)
    app.state.groups = type(app.state.groups)(maxlen=20)  # hold only the newest 20 groups
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("a", "down", "enter")
        await kit.settle(pilot)
        assert "3/4 held (older: rl-console replay)" in kit.screen_text(app)


# -- snapshots ------------------------------------------------------------------------------------

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_signals_page(snap_compare, kit, size):
    source = kit.Source(signals_run(kit))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("m", "i")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_alerts_with_evidence(snap_compare, kit, size):
    source = kit.Source(signals_run(kit))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("a", "down")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
