"""SVG snapshots at 80x24, 160x48 and 40x12 (deterministic data: fixed ts, elapsed from event ts).

Update after an intended visual change with: pytest tests/console/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from console.app import RLConsoleApp

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48"), pytest.param((40, 12), id="40x12")]
SMALL = [pytest.param((80, 24), id="80x24"), pytest.param((40, 12), id="40x12")]


def _app(kit, events):
    source = kit.Source(events)  # held open: a live backend, so no "disconnected" toast
    return RLConsoleApp(source), source


def _before(kit, source, keys=()):
    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        for key in keys:
            await pilot.press(key)
            await kit.settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(snap_compare, kit, size):
    app, source = _app(kit, kit.make_run(steps=24))
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source))


@pytest.mark.parametrize("size", SIZES)
def test_samples(snap_compare, kit, size):
    app, source = _app(kit, kit.make_run(steps=24))
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source, ["s", "down", "down"]))


@pytest.mark.parametrize("size", SMALL)
@pytest.mark.parametrize("key", ["e", "l", "m", "question_mark"])
def test_other_screens(snap_compare, kit, key, size):
    """Parameters, events, metrics and help: header and footer readable down to 40x12."""
    app, source = _app(kit, kit.make_run(steps=24))
    keys = [key, "escape"] if key == "e" else [key]  # out of the form: no blinking cursor in the picture
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source, keys))


@pytest.mark.parametrize("size", SMALL)
def test_dashboard_starting(snap_compare, kit, size):
    app, source = _app(kit, kit.starting_run())
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source))


@pytest.mark.parametrize("size", SMALL)
def test_stop_dialog(snap_compare, kit, size):
    app, source = _app(kit, kit.make_run(steps=24))
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source, ["x"]))


@pytest.mark.parametrize("size", SIZES[:2])
def test_dashboard_bounds_zoom_and_markers(snap_compare, kit, size):
    """Declared reward ranges as dotted bounds, `z` zoomed to the last 50 steps, and a pause,
    a params change and an alert at one step all visible on the marker row."""
    from backend.protocol.events import StateChanged

    events = kit.make_run(steps=80, params_at=60, alert_at=60, reward_ranges=[(0.0, 1.0), (0.0, 1.0)])
    n = len(events)
    events += [StateChanged(seq=n, ts=kit.TS0 + 500, state="paused", step=60),
               StateChanged(seq=n + 1, ts=kit.TS0 + 501, state="running", step=60)]
    app, source = _app(kit, events)
    assert snap_compare(app, terminal_size=size, run_before=_before(kit, source, ["z"]))
