"""Samples screen: groups table, completions, full text, filters and sorts."""

from __future__ import annotations

from textual.widgets import Input

from console.app import RLConsoleApp
from console.screens.completion import CompletionModal
from console.screens.samples import SamplesScreen
from console.state import is_zero_std, max_abs_advantage, truncated_count
from console.widgets.completions_table import CompletionsTable
from console.widgets.groups_table import GroupsTable


def cell_text(table, row: int, col: int) -> str:
    value = table.get_row_at(row)[col]
    return getattr(value, "plain", str(value))


async def open_samples(kit, pilot, source):
    await kit.settle(pilot, source)
    await pilot.press("s")
    await kit.settle(pilot)
    assert isinstance(pilot.app.screen, SamplesScreen)
    return pilot.app.screen


async def test_groups_and_completions_shown(kit):
    source = kit.Source(kit.make_run(steps=6))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        groups = screen.query_one(GroupsTable)
        assert groups.row_count == 24
        assert list(groups.column_labels) == ["group", "prompt", "mean", "std", "max|adv|", "trunc"]
        assert cell_text(groups, 0, 0) == "s6 g3"  # the notation of the dashboard's newest groups too
        completions = screen.query_one(CompletionsTable)
        assert completions.row_count == 8
        labels = list(completions.column_labels)
        assert labels == ["#", "total", "adv", "char_match", "first_char", "len", "trunc", "wv", "text"]
        first = app.state.view_groups()[0]
        assert completions.group is first
        assert cell_text(completions, 0, 1) == f"{first.completions[0].reward:.3f}"
        text = kit.screen_text(app)
        assert "all 24 groups" in text and "o:newest" in text
        assert "step 6 group 3" in text
        # moving the cursor shows the next group's completions
        await pilot.press("down")
        await kit.settle(pilot)
        second = app.state.view_groups()[1]
        assert completions.group is second
        assert f"step {second.step} group {second.group}" in kit.screen_text(app)


async def test_enter_opens_completions_then_full_text(kit):
    source = kit.Source(kit.make_run(steps=4))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        # find a group with a long (truncated) completion and go to it
        groups = app.state.view_groups()
        index = next(i for i, g in enumerate(groups) if truncated_count(g))
        for _ in range(index):
            await pilot.press("down")
        await pilot.press("enter")
        await kit.settle(pilot)
        completions = screen.query_one(CompletionsTable)
        assert app.focused is completions
        group = groups[index]
        ci = next(i for i, c in enumerate(group.completions) if c.truncated)
        for _ in range(ci):
            await pilot.press("down")
        await pilot.press("enter")
        await kit.settle(pilot)
        assert isinstance(app.screen, CompletionModal)
        text = kit.screen_text(app)
        full = group.completions[ci].text
        assert len(full) > 60
        assert app.screen.query_one("#completion-text").content.plain == full
        assert full[:40] in text
        assert "TRUNCATED" in text and f"completion {ci} of 8" in text and "char_match" in text
        await pilot.press("escape")
        await kit.settle(pilot)
        assert isinstance(app.screen, SamplesScreen)


async def test_filter_keys_and_sort(kit):
    source = kit.Source(kit.make_run(steps=8))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        groups = screen.query_one(GroupsTable)
        await pilot.press("z")
        await kit.settle(pilot)
        assert screen.zero_std and groups.row_count == len([g for g in app.state.groups if is_zero_std(g)]) > 0
        assert all(cell_text(groups, r, 3) == "0.000" for r in range(groups.row_count))
        await pilot.press("z", "t")
        await kit.settle(pilot)
        assert not screen.zero_std and screen.truncated
        assert groups.row_count == len([g for g in app.state.groups if truncated_count(g)])
        assert all(int(cell_text(groups, r, 5)) > 0 for r in range(groups.row_count))
        await pilot.press("t", "o")
        await kit.settle(pilot)
        assert screen.sort == "abs_advantage" and "o:|adv| desc" in kit.screen_text(app)
        advs = [float(cell_text(groups, r, 4)) for r in range(groups.row_count)]
        assert advs == sorted(advs, reverse=True) and advs[0] == round(max(max_abs_advantage(g) for g in app.state.groups), 3)
        await pilot.press("o")
        await kit.settle(pilot)
        means = [float(cell_text(groups, r, 2)) for r in range(groups.row_count)]
        assert screen.sort == "lowest_mean" and means == sorted(means)
        await pilot.press("o")
        await kit.settle(pilot)
        assert screen.sort == "newest"


async def test_slash_from_dashboard_focuses_filter_and_searches(kit):
    source = kit.Source(kit.make_run(steps=8))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("slash")
        await kit.settle(pilot)
        assert isinstance(app.screen, SamplesScreen)
        assert isinstance(app.focused, Input) and app.focused.id == "filter"
        await pilot.press(*"river")  # letters like 's', 'e' go to the input, not to bindings
        await kit.settle(pilot)
        assert isinstance(app.screen, SamplesScreen) and app.focused.value == "river"
        groups = app.screen.query_one(GroupsTable)
        expected = app.state.view_groups(query="river")
        assert 0 < groups.row_count == len(expected) < len(app.state.groups)
        assert all("river" in cell_text(groups, r, 1) for r in range(groups.row_count))
        await pilot.press("enter")
        await kit.settle(pilot)
        assert app.focused is groups
        await pilot.press("d")
        await kit.settle(pilot)
        assert app.current_mode == "dashboard"


async def test_escape_clears_the_search_enter_keeps_it(kit):
    """esc in the filter input clears the search and goes back to the groups; enter keeps it
    (and then esc on the groups clears it)."""
    source = kit.Source(kit.make_run(steps=8))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        groups = screen.query_one(GroupsTable)
        everything = groups.row_count
        for leave in ("escape", "enter"):
            await pilot.press("slash", *"river")
            await kit.settle(pilot)
            assert 0 < groups.row_count < everything
            await pilot.press(leave)
            await kit.settle(pilot)
            assert app.focused is groups
            if leave == "escape":
                assert screen.query_one("#filter", Input).value == "" and groups.row_count == everything
        assert screen.query_one("#filter", Input).value == "river" and groups.row_count < everything
        await pilot.press("escape")  # on the groups: the search goes too
        await kit.settle(pilot)
        assert screen.query_one("#filter", Input).value == "" and groups.row_count == everything


async def test_cursor_stays_on_group_while_new_groups_arrive(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        await pilot.press("down", "down")
        await kit.settle(pilot)
        table = screen.query_one(GroupsTable)
        chosen = table.selected_group
        source.push(*[kit.make_group(4, k, ts=kit.TS0 + 500) for k in range(4)])
        await kit.wait_for(pilot, lambda: app.state.groups_total == 16)
        await kit.settle(pilot)
        assert table.row_count == 16
        assert table.selected_group is chosen and table.cursor_row == 6


async def test_cursor_on_the_first_row_follows_the_newest_group(kit):
    """Untouched (or moved back to the top), the cursor tails the newest group and the
    completions pane shows it; moved down, it stays on its group (test above)."""
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        table = screen.query_one(GroupsTable)
        completions = screen.query_one(CompletionsTable)
        assert table.cursor_row == 0 and completions.group is app.state.view_groups()[0]
        source.push(*[kit.make_group(4, k, ts=kit.TS0 + 500) for k in range(4)])
        await kit.wait_for(pilot, lambda: app.state.groups_total == 16)
        await kit.settle(pilot)
        newest = app.state.view_groups()[0]
        assert newest.step == 4 and table.cursor_row == 0 and table.selected_group is newest
        assert completions.group is newest and f"step 4 group {newest.group}" in kit.screen_text(app)


async def test_sort_starts_at_the_top_and_the_status_says_what_a_filter_searches(kit):
    from console.state import RunState

    source = kit.Source(kit.make_run(steps=12))
    app = RLConsoleApp(source)
    app.state = RunState(max_groups=20)  # a small window: 48 groups arrive, 20 are kept
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await kit.settle(pilot)
        table = app.screen.query_one(GroupsTable)
        table.focus()
        for _ in range(6):
            await pilot.press("down")
        assert table.cursor_row == 6
        await pilot.press("o")
        await kit.settle(pilot)
        assert table.cursor_row == 0 and table.scroll_y == 0
        assert "the newest 20 of 48 groups · older: replay" in kit.screen_text(app)  # not on this machine
        await pilot.press("t")
        await kit.settle(pilot)
        filtered = len(app.screen.shown_groups)
        assert f" {filtered} {'match' if filtered == 1 else 'matches'} in the newest 20 of 48 groups · older: replay" in kit.screen_text(app)
        await pilot.press("t")
        await pilot.press("ctrl+c")
        await kit.settle(pilot)
        assert "q detaches (the run keeps going)" in app.status_history[-1][1]


async def test_prompts_sharing_a_long_prefix_show_where_they_differ(kit):
    """A user's task: every prompt starts with the same long instruction; the tables show the
    part after it (behind "…"), the full prompt stays in the group's detail."""
    from backend.protocol.events import SampleGroup

    system = "You are a careful assistant. Think step by step, then give the answer inside <answer></answer> tags. " * 3
    run = [e.model_copy(update={"prompt": system + e.prompt}) if isinstance(e, SampleGroup) else e for e in kit.make_run(steps=6)]
    source = kit.Source(run)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        newest = app.state.view_groups()[0]
        word = newest.prompt.split("'")[1]
        dashboard = kit.screen_text(app)
        assert f"…the word '{word}'" in dashboard or f"…word '{word}'" in dashboard, dashboard
        screen = await open_samples(kit, pilot, source)
        groups = screen.query_one(GroupsTable)
        cells = [cell_text(groups, r, 1) for r in range(groups.row_count)]
        assert all(c.startswith("…") and "careful assistant" not in c for c in cells)
        assert f"'{word}'" in cells[0]  # the distinguishing word is visible at 80 columns
        assert len({c for c in cells}) > 1
        # the full prompt is still one key away: the completion's full text shows it
        await pilot.press("tab", "enter")
        await kit.settle(pilot)
        assert isinstance(app.screen, CompletionModal)
        assert "You are a careful assistant" in kit.screen_text(app)


async def test_prompts_without_a_long_shared_prefix_are_shown_from_the_start(kit):
    source = kit.Source(kit.make_run(steps=3))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(kit, pilot, source)
        groups = screen.query_one(GroupsTable)
        assert all(cell_text(groups, r, 1).startswith("Reverse the word") for r in range(groups.row_count))


def test_two_samples_screens_share_no_state():
    """The table's rebuild bookkeeping and the view settings belong to each screen, not to the
    class (class attributes were shared by every SamplesScreen)."""
    a, b = SamplesScreen(), SamplesScreen()
    for name in ("_table_view", "_table_at", "_table_total", "_table_pending", "query_text", "zero_std", "truncated",
                 "sort", "shown_groups", "evidence"):
        assert name in vars(a) and name in vars(b), f"{name} is class state, shared by every SamplesScreen"
        assert name not in vars(SamplesScreen), name
    a._table_view, a._table_total, a.shown_groups = ("x",), 7, [1]
    assert b._table_view == () and b._table_total == 0 and b.shown_groups == []
    assert a.shown_groups is not b.shown_groups


def _logged_run(kit, tmp_path, monkeypatch, steps: int):
    """A run whose events are in a real events.db under RLC_HOME (as the backend writes it)."""
    from backend.protocol.paths import db_path
    from backend.runstore import RunStore

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    events = kit.make_run(steps=steps)
    db_path(kit.RUN_ID).parent.mkdir(parents=True)
    store = RunStore(db_path(kit.RUN_ID))
    store.append_many([e.model_copy(update={"seq": -1}) for e in events])
    store.close()
    return events


async def test_older_groups_page_from_the_runs_events_db_and_the_status_says_what_a_filter_covers(kit, tmp_path, monkeypatch):
    from console.state import RunState

    events = _logged_run(kit, tmp_path, monkeypatch, steps=30)  # 120 groups; the console holds the newest 40
    source = kit.Source(events)
    app = RLConsoleApp(source, run_id=kit.RUN_ID)
    app.state = RunState(max_groups=40)
    app.state.run_id = kit.RUN_ID
    SamplesScreen.PAGE = 40  # (the class's page size; 500 in use)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_samples(kit, pilot, source)
            status = str(screen.query_one("#filter-status").render())
            assert "the newest 40 of 120 groups · b older" in status
            assert {g.step for g in screen.shown_groups} == set(range(21, 31))
            pages = []
            for _ in range(3):  # older, older, and no more
                await pilot.press("b")
                await kit.wait_for(pilot, lambda: len(screen.pages) == len(pages) + 1 or "no older" in app.status[0],
                                   what="an older page")
                await kit.settle(pilot)
                pages.append(sorted({g.step for g in screen.shown_groups}))
            assert pages[0] == list(range(11, 21)) and pages[1] == list(range(1, 11)) and pages[2] == pages[1]
            assert "no older groups" in app.status[0]
            status = str(screen.query_one("#filter-status").render())
            assert "older page 2 (40 groups, steps 1–10, events.db) · the run's start · n newer" in status
            # the filter searches the page shown (and says so)
            await pilot.press("slash")
            await pilot.press(*"maple")
            await kit.settle(pilot)
            assert screen.shown_groups and all("maple" in g.prompt for g in screen.shown_groups)
            status = str(screen.query_one("#filter-status").render())
            n = len(screen.shown_groups)
            assert f" {n} {'match' if n == 1 else 'matches'} in older page 2 (40 groups" in status  # what the filter searched
            assert {g.step for g in screen.shown_groups} <= set(range(1, 11))
            await pilot.press("escape")
            await pilot.press("n")
            await kit.wait_for(pilot, lambda: len(screen.pages) == 1, what="the newer page")
            await kit.settle(pilot)
            assert {g.step for g in screen.shown_groups} <= set(range(11, 21))
            await pilot.press("n")  # back to the held groups, live again
            await kit.settle(pilot)
            assert not screen.pages and {g.step for g in screen.shown_groups} <= set(range(21, 31))
            assert "the newest 40 of 120 groups · b older" in str(screen.query_one("#filter-status").render())
    finally:
        del SamplesScreen.PAGE  # back to the class's own value


async def test_at_80_columns_the_status_keeps_what_is_searched_and_the_filters_in_fewer_words(kit):
    from console.state import RunState

    source = kit.Source(kit.make_run(steps=12))
    app = RLConsoleApp(source)
    app.state = RunState(max_groups=20)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_samples(kit, pilot, source)
        for key in ("t", "o"):
            await pilot.press(key)
            await kit.settle(pilot)
        row = kit.screen_text(app).splitlines()[1]
        shown = len(app.screen.shown_groups)
        assert row.rstrip().endswith(f" {shown} in newest 20 of 48 · older: replay t:trunc o:|adv| desc"), row
