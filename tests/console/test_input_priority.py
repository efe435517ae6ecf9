"""Operator input first: during a flood, a key makes the reader, the data repaint and the
automatic GC stand back until the key's effect is painted (or INPUT_HOLD_MAX_S passes)."""

from __future__ import annotations

import asyncio
import gc
import time

from textual import events

from console.app import RLConsoleApp
from console.screens.samples import SamplesScreen

N = 30_000



async def test_a_key_during_a_flood_is_painted_before_the_reader_goes_on(kit, monkeypatch):
    """The mechanism, not the speed: the hold's time cap is widened here so that a frame slowed
    by other work on a shared 2-core box (the cap then releases the reader, by design) cannot
    pass for a missing paint. The cap itself is tested below; how fast a key is painted under a
    flood is measured in bench/tui_load.py."""
    monkeypatch.setattr(RLConsoleApp, "INPUT_HOLD_MAX_S", 5.0)
    source = kit.Source(kit.flood(N))
    app = RLConsoleApp(source)
    holds: list[dict] = []
    stand_back = RLConsoleApp._stand_back

    async def recorded(self):
        entry = {"delivered_before": source.delivered, "flooding": not source.exhausted, "gc_on_before": gc.isenabled()}
        start = time.perf_counter()
        orig_wait = self._input_painted.wait

        async def wait():  # what holds while the reader stands back
            entry["gc_on_during"] = gc.isenabled()
            entry["holding"] = self._holding
            entry["delivered_during"] = source.delivered
            await orig_wait()
            entry["released_by_paint"] = True

        self._input_painted.wait = wait
        try:
            await stand_back(self)
        finally:
            del self._input_painted.wait
        entry["s"] = time.perf_counter() - start
        entry["delivered_after"] = source.delivered
        entry["gc_on_after"] = gc.isenabled()
        holds.append(entry)

    monkeypatch.setattr(RLConsoleApp, "_stand_back", recorded)
    repaints: list[bool] = []
    repaint = RLConsoleApp.repaint

    def watched(self, force=False):
        if self._holding and not force:
            before = self.screen.rendered_version
            repaint(self, force)
            repaints.append(self.screen.rendered_version != before)
        else:
            repaint(self, force)

    monkeypatch.setattr(RLConsoleApp, "repaint", watched)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.wait_for(pilot, lambda: source.delivered > 2_000, what="flood under way")
        await pilot.press("s")
        await kit.wait_for(pilot, lambda: isinstance(app.screen, SamplesScreen), timeout=2.0, what="samples screen")
        await kit.wait_for(pilot, lambda: holds, timeout=2.0, what="the reader to stand back")
        first = holds[0]
        assert first["flooding"], "the flood was over before the key press; the test proves nothing"
        assert first["gc_on_during"] is False and first["gc_on_after"], first  # off from the key's arrival to its frame
        assert first["holding"] and first["delivered_during"] == first["delivered_before"], first  # no reads meanwhile
        assert first.get("released_by_paint"), f"the hold ended by its time cap, not by a paint: {first}"
        assert first["s"] < 5.0, first
        await kit.settle(pilot, source)
        assert app.state.groups_total == N + 4  # nothing lost: the reader went on after the paint
    assert not any(repaints), "a data repaint ran while the reader stood back for input"
    assert gc.isenabled()


async def test_data_repaints_wait_for_an_unpainted_input_even_with_the_reader_idle(kit):
    """The reader only stands back when it is reading; the repaint tick and the samples
    screen's deferred rebuild also wait while an input is not yet painted (time-capped)."""
    source = kit.Source(kit.make_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, SamplesScreen) and not app.input_busy()
        # an input has arrived from the driver but is not handled yet (as if the loop were busy)
        app._inputs_posted += 1
        app._input_at = time.monotonic()
        assert app.input_busy()
        app.state.version += 1
        before = screen.rendered_version
        app.repaint()
        assert screen.rendered_version == before, "the repaint tick ran ahead of an unpainted input"
        screen._table_pending = True
        screen._deferred_refresh()
        assert screen._table_pending, "the deferred table rebuild ran ahead of an unpainted input"
        app.repaint(force=True)  # forced repaints (the operator's own actions) still go
        assert screen.rendered_version == app.state.version
        # the cap: an input that never gets painted stops holding data work back
        app._input_at = time.monotonic() - RLConsoleApp.INPUT_HOLD_MAX_S - 0.01
        assert not app.input_busy()
        app._inputs_handled += 1  # (balance the counters before the app handles real keys again)
        app.state.version += 1
        app.repaint()
        assert screen.rendered_version == app.state.version


async def test_leaving_with_an_unpainted_input_gives_the_process_its_gc_back(kit):
    source = kit.Source(kit.make_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        app.post_message(events.Key("x", None))  # (an unbound key) arrives: GC is held until its frame
        assert not gc.isenabled()
        await pilot.press("q")
    assert gc.isenabled()


async def test_the_samples_table_is_not_rebuilt_while_hidden(kit):
    """A deferred rebuild that fires after the operator left the samples screen would dirty
    both tables, and the next visit's first frame would have to re-render them all."""
    source = kit.Source(kit.make_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await kit.settle(pilot)
        samples = app.screen
        assert isinstance(samples, SamplesScreen)
        await pilot.press("d")
        await kit.settle(pilot)
        source.push(kit.make_group(99, 0))
        await kit.wait_for(pilot, lambda: app.state.groups_total == 12 * 4 + 1, what="a new group")
        shown = samples.shown_groups
        samples._table_pending = True
        samples._deferred_refresh()
        assert samples.shown_groups is shown and not samples._table_pending
        await pilot.press("s")
        await kit.settle(pilot)
        assert samples.shown_groups is not shown and samples.shown_groups[0].step == 99  # rebuilt once shown


async def test_input_that_never_stops_does_not_starve_the_reader(kit):
    """Keys arriving faster than frames (a held-down key) keep data work waiting, but after each
    hold the reader gets a whole slice: the stream still advances."""
    source = kit.Source(kit.flood(200_000))
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await kit.wait_for(pilot, lambda: source.delivered > 2_000, what="flood under way")
        stop = asyncio.Event()

        async def typing() -> None:  # an input posted every 5 ms, never painted (never handled)
            while not stop.is_set():
                app._inputs_posted += 1
                app._input_at = time.monotonic()
                await asyncio.sleep(0.005)

        task = asyncio.create_task(typing())
        await pilot.pause(0.1)
        before = source.delivered
        await pilot.pause(1.5)
        advanced = source.delivered - before
        stop.set()
        await task
        app._inputs_handled = app._inputs_painted = app._inputs_posted  # (balance the counters again)
        assert not source.exhausted
        assert advanced > 100, f"the reader starved while input kept arriving: {advanced} events in 1.5 s"
