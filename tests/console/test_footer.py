"""KeyFooter: one line of the active screen's keys, no per-key widgets, clickable."""

from console.app import RLConsoleApp
from console.widgets.footer import KeyFooter


async def test_footer_follows_the_screen_and_does_not_grow(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 30)) as pilot:
        await kit.settle(pilot, source)
        footer = app.screen.query_one(KeyFooter)
        assert "p pause" in footer.plain and "q detach" in footer.plain and "zero-std" not in footer.plain
        await pilot.press("s")
        await kit.settle(pilot)
        samples_footer = app.screen.query_one(KeyFooter)
        assert "z zero-std" in samples_footer.plain and "/ filter" in samples_footer.plain
        for i in range(40):  # Textual's Footer leaked watchers on every switch (textual#6666)
            await pilot.press("sd"[i % 2])
            await pilot.pause(0.02)
        await kit.settle(pilot)
        for screen_footer in (footer, samples_footer):
            assert not screen_footer.children
            assert sum(len(v) for v in getattr(screen_footer, "__watchers", {}).values()) == 0


async def test_clicking_a_key_does_what_pressing_it_does(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 30)) as pilot:
        await kit.settle(pilot, source)
        footer = app.screen.query_one(KeyFooter)
        x = footer.plain.index(" p pause") + 1
        await pilot.click(KeyFooter, offset=(x, 0))
        await kit.wait_for(pilot, lambda: len(source.sent) == 1, what="pause sent by a click")
        assert source.sent[0].kind == "pause"


async def test_at_80x24_every_screen_keeps_the_keys_between_screens(kit):
    """The keys that matter at 80 columns: help, detach, pause, the palette and the keys to the
    other main screens (the dashboard's metrics and log keys were pushed out before)."""
    source = kit.Source(kit.make_run(steps=4))
    app = RLConsoleApp(source)
    nav = {"d": "d dash", "s": "s samples", "e": "e params", "l": "l log", "m": "m metrics"}
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        for key in ("d", "m", "l", "e"):
            await pilot.press(key)
            if key == "e":
                await pilot.press("escape")  # out of the form: its typed keys are not offered while it has focus
            await kit.settle(pilot)
            footer = app.screen.query_one(KeyFooter).plain
            assert len(footer) <= 80
            for want in ("? help", "q detach", "p pause", "^p palette", *(v for k, v in nav.items() if k != key)):
                assert want in footer, (key, want, footer)
            assert kit.screen_text(app).splitlines()[-1].rstrip() == footer.rstrip()  # on the terminal's last line
        await pilot.press("s")  # the samples screen's own keys come first; help, detach and the way back stay
        await kit.settle(pilot)
        footer = app.screen.query_one(KeyFooter).plain
        for want in ("z zero-std", "t truncated", "o sort", "? help", "q detach", "p pause", "d dash"):
            assert want in footer, (want, footer)


async def test_the_pause_key_says_resume_while_the_run_is_paused(kit):
    from backend.protocol.events import StateChanged

    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await kit.settle(pilot, source)
        assert "p pause" in app.screen.query_one(KeyFooter).plain
        source.push(StateChanged(ts=kit.TS0 + 500, state="paused", step=2))
        await kit.wait_for(pilot, lambda: "p resume" in app.screen.query_one(KeyFooter).plain, what="p resume")
        source.push(StateChanged(ts=kit.TS0 + 501, state="running", step=2))
        await kit.wait_for(pilot, lambda: "p pause" in app.screen.query_one(KeyFooter).plain, what="p pause")
