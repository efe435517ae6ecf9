"""80x24 and 40x12: the header keeps the run's state, connection and step; the footer keeps
`?` and `q`; the least useful parts go first, and nothing is cut mid-word."""

from __future__ import annotations

import pytest

from backend.protocol.events import StateChanged
from console.app import RLConsoleApp
from console.widgets.footer import KeyFooter
from console.widgets.run_header import RunHeader, short_run_ids

SIZES = [(40, 12), (80, 24), (160, 48)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_screen_keeps_state_step_help_and_detach(kit, size):
    source = kit.Source(kit.make_run(steps=24))
    app = RLConsoleApp(source)
    async with app.run_test(size=size) as pilot:
        await kit.settle(pilot, source)
        for key in ("d", "s", "e", "l", "m", "question_mark"):
            await pilot.press(key)
            if key == "e":
                await pilot.press("escape")  # leave the form: single keys work (and are offered) again
            await kit.settle(pilot)
            lines = kit.screen_text(app).splitlines()
            header, footer = lines[0], lines[-1]
            assert len(lines) == size[1] and max(len(line) for line in lines) <= size[0]
            assert header.removeprefix(" rl-console ").lstrip().startswith("RUNNING "), header
            assert " step 24" in header and "…" not in header.replace("…demo", ""), header
            assert " ? help " in footer and " q detach " in footer, (key, footer)
            assert not footer.rstrip().endswith("…"), footer  # whole hints only
        await pilot.press("d")
        await kit.settle(pilot)
        footer = app.screen.query_one(KeyFooter).plain
        assert " d dash " not in footer  # the key to the screen it is on is no hint
        if size[0] >= 80:
            for hint in (" s samples ", " e params ", " p pause ", " ^p palette "):
                assert hint in footer + " ", (hint, footer)  # (a tight line has no space after its last hint)
        if size[0] >= 160:
            header = app.screen.query_one(RunHeader).plain
            for part in ("rl-console", kit.RUN_ID, "dashboard", "weights v24", "default", "tiny-gpt2-reverse", "0:01:10"):
                assert part in header, part


async def test_at_40_columns_a_disconnected_run_still_says_so(kit):
    source = kit.Source(kit.make_run(steps=3), hold_open=False)
    app = RLConsoleApp(source)
    async with app.run_test(size=(40, 12)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "disconnected", what="disconnect")
        await kit.settle(pilot)
        header = kit.screen_text(app).splitlines()[0]
        assert header.startswith(" RUNNING  DISCONNECTED ") and " step 3" in header, header


async def test_a_typed_key_is_not_offered_while_an_input_has_focus(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("slash")  # the samples filter takes the keys now
        await kit.settle(pilot)
        footer = app.screen.query_one(KeyFooter).plain
        assert " q detach " not in footer and " ? help " not in footer and "^p palette" in footer


def test_run_ids_shorten_to_time_then_name():
    assert short_run_ids("20261201-121054-123-demo") == ["20261201-121054-123-demo", "121054-123-demo", "…demo"]
    assert short_run_ids("20240501-120000-demo") == ["20240501-120000-demo", "120000-demo", "…demo"]
    assert short_run_ids("my-own-run")[0] == "my-own-run"


async def test_ended_run_header_at_40_columns(kit):
    events = kit.make_run(steps=3) + [StateChanged(seq=10_000, ts=kit.TS0 + 999, state="finished", reason="stopped at step 3", step=3)]
    source = kit.Source(events, hold_open=False)
    app = RLConsoleApp(source)
    async with app.run_test(size=(40, 12)) as pilot:
        await kit.wait_for(pilot, lambda: app.state.connection == "ended", what="ended")
        await kit.settle(pilot)
        assert kit.screen_text(app).splitlines()[0].startswith(" STOPPED  step 3 ")
