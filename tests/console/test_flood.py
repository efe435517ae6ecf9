"""A flood of events keeps memory bounded and the UI responsive."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from console.app import RLConsoleApp, tune_gc
from console.screens.samples import SamplesScreen
from console.widgets.groups_table import GroupsTable

N = 20_000


@pytest.fixture
def console_gc():
    """The console process's own collector settings (`rl-console` applies `tune_gc` at start).
    Without them a full collection walks everything the test process holds from earlier tests
    (~140,000 objects, 0.2-0.3 s each here) and a flood triggers one every ~70,000 allocations:
    the stall measured would be pytest's, not the console's."""
    before = gc.get_threshold()
    tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


async def test_twenty_thousand_groups_bounded_and_responsive(kit, console_gc):
    source = kit.Source(kit.flood(N))
    app = RLConsoleApp(source)
    lags: list[float] = []

    async def probe() -> None:  # how late does the event loop wake us while the flood runs?
        while not source.exhausted:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - start - 0.01)

    async with app.run_test(size=(80, 24)) as pilot:
        task = asyncio.create_task(probe())
        await kit.wait_for(pilot, lambda: source.delivered > 2_000, what="flood under way")
        pressed_at = source.delivered
        await pilot.press("s")  # a key during the flood still works
        await kit.wait_for(pilot, lambda: isinstance(app.screen, SamplesScreen), timeout=2.0, what="samples screen")
        assert pressed_at < N, "the flood was over before the key press; the test proves nothing"
        await kit.settle(pilot, source)
        await task
        state = app.state
        assert state.groups_total == N + 4
        assert len(state.groups) == state.groups.maxlen == 500
        assert sum(len(v) for v in state.groups_by_step.values()) == 500
        assert len(state.log) == state.log.maxlen == 1000
        table = app.screen.query_one(GroupsTable)
        await pilot.pause(SamplesScreen.TABLE_REFRESH_S + 0.3)  # the table rebuilds at most once a second under load
        assert table.row_count == 500
        assert table.get_row_at(0)[0].split()[0] == f"s{2 + (N - 1) // 8}"  # newest group on top
        print(f"pressed at {pressed_at}, probes {len(lags)}, max lag {max(lags):.3f}s")
        assert lags and max(lags) < 0.5, f"event loop stalled {max(lags):.3f}s"
        await pilot.press("d")
        await kit.settle(pilot)
        assert app.current_mode == "dashboard"
