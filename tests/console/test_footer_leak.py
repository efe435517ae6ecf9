"""Screen switches must not grow the footer's watcher list (Textualize/textual#6666)."""

from console.app import RLConsoleApp
from console.widgets.footer import KeyFooter


async def test_footer_watchers_stay_bounded_across_screen_switches(kit):
    source = kit.Source(kit.make_run(steps=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        counts = []
        for i in range(40):
            await pilot.press("sd"[i % 2])
            await pilot.pause(0.05)
            footer = app.screen.query_one(KeyFooter)
            counts.append(sum(len(v) for v in getattr(footer, "__watchers", {}).values()))
        await pilot.pause(0.3)
        footer = app.screen.query_one(KeyFooter)
        watchers = sum(len(v) for v in getattr(footer, "__watchers", {}).values())
        keys = len(footer.query("FooterKey"))
        # at most one watcher per live key: nothing accumulates over 40 switches
        assert watchers <= keys + 1, (watchers, keys, counts[-6:])
