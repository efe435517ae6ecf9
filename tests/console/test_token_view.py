"""The token view of a completion's full text: `t` cycles text → engine log-prob → |trainer −
engine|; ← / → select a token; completions without tokens say why."""

from __future__ import annotations

import math

import pytest
from textual.widgets import Static

from backend.protocol.events import SampleGroup
from console.app import RLConsoleApp
from console.screens.completion import CompletionModal
from console.screens.samples import SamplesScreen
from console.widgets.completions_table import CompletionsTable
from console.widgets.groups_table import GroupsTable
from console.widgets.token_view import engine_style, gap_style, least_probable, token_detail, token_text

TOKENS = ["ol", "pa", "m", "\n", "<|endoftext|>"]
ENGINE = [-0.1, -1.0, -2.0, -4.5, -0.2]
TRAINER = [-0.12, -1.1, -2.6, -6.0, -0.2]


def with_tokens(kit, *, trainer: bool = True, telemetry: int | None = 1) -> list:
    """The conftest run; its newest step's group 0 carries tokens (with the trainer's log-probs
    if `trainer`), as the backend's first `telemetry.token_view_groups` groups do."""
    events = kit.make_run(steps=3)
    if telemetry is not None:
        events[0] = events[0].model_copy(update={"profile_data": {"telemetry": {"token_view_groups": telemetry}}})
    for i, e in enumerate(events):
        if isinstance(e, SampleGroup) and e.step == 3 and e.group == 0:
            first = e.completions[0].model_copy(update={
                "text": "".join(TOKENS), "tokens": TOKENS, "token_logprobs": ENGINE,
                "trainer_logprobs": TRAINER if trainer else []})
            events[i] = e.model_copy(update={"completions": [first, *e.completions[1:]]})
    return events


# -- pure rendering -------------------------------------------------------------------------------

def test_engine_bands_and_gap_bands():
    assert [engine_style(x) for x in (-0.1, -0.5, -1.0, -2.0, -3.0, -9.0)] == [
        "black on green", "black on yellow", "black on yellow", "black on dark_orange", "white on red", "white on red"]
    assert [gap_style(x) for x in (0.0, 0.05, 0.1, 0.6, 1.0, 3.0)] == [
        "black on green", "black on yellow", "black on yellow", "black on dark_orange", "white on red", "white on red"]


def test_token_text_styles_each_token_and_marks_the_selected_one():
    text = token_text(TOKENS, ENGINE, TRAINER, "engine", selected=1)
    assert text.plain == "olpam⏎\n<|endoftext|>"
    styles = [str(span.style) for span in text.spans]
    assert styles[0] == "black on green"
    assert styles[1].startswith("black on yellow") and "underline" in styles[1]
    assert styles[3] == "white on red"  # the newline token at -4.5
    gap = token_text(TOKENS, ENGINE, TRAINER, "gap")
    assert [str(s.style) for s in gap.spans] == ["black on green", "black on yellow", "black on dark_orange",
                                                 "white on red", "black on green"]
    # gap mode without the trainer's: dim, not a made-up colour
    assert {str(s.style) for s in token_text(TOKENS, ENGINE, [], "gap").spans} == {"dim"}


def test_token_detail_gives_the_values_of_the_selected_token():
    line = token_detail(TOKENS, ENGINE, TRAINER, 2).plain
    assert "token 3/5 'm'" in line
    assert f"engine -2.000 (p {math.exp(-2.0):.2f})" in line
    assert "trainer -2.600" in line and "|Δ| 0.600" in line
    assert "least probable" not in line
    assert least_probable(TOKENS, ENGINE, 2).plain == "least probable: #4 '\\n' -4.50  #3 'm' -2.00"


# -- the modal ------------------------------------------------------------------------------------

async def open_completion(kit, pilot, source, step: int = 3, group: int = 0) -> CompletionModal:
    app = pilot.app
    await kit.settle(pilot, source)
    await pilot.press("s")
    await kit.settle(pilot)
    assert isinstance(app.screen, SamplesScreen)
    table = app.screen.query_one(GroupsTable)
    row = next(r for r in range(table.row_count) if table.get_row_at(r)[0] == f"s{step} g{group}")
    for _ in range(row):
        await pilot.press("down")
    await pilot.press("enter")
    await kit.settle(pilot)
    assert app.screen.query_one(CompletionsTable).has_focus
    await pilot.press("enter")
    await kit.settle(pilot)
    assert isinstance(app.screen, CompletionModal)
    return app.screen


async def test_t_colours_tokens_by_engine_logprob_then_by_the_trainer_gap(kit):
    source = kit.Source(with_tokens(kit))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        modal = await open_completion(kit, pilot, source)
        assert modal.mode == "text"
        await pilot.press("t")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "engine sampling log-prob:  > -0.5   -0.5…-1.5   -1.5…-3   < -3" in text
        assert "token 1/5 'ol'  engine -0.100 (p 0.90)" in text
        await pilot.press("right", "right")
        await kit.settle(pilot)
        assert modal.token == 2
        assert "token 3/5 'm'  engine -2.000" in kit.screen_text(app)
        await pilot.press("t")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert modal.mode == "gap"
        assert "|trainer − engine| log-prob:  < 0.05   0.05…0.2   0.2…1   ≥ 1" in text
        assert "trainer -2.600  |Δ| 0.600" in text
        await pilot.press("left")
        await kit.settle(pilot)
        assert "token 2/5 'pa'" in kit.screen_text(app)
        await pilot.press("t")  # back to the text: ← / → scroll as before
        await kit.settle(pilot)
        assert modal.mode == "text" and "token 2/5" not in kit.screen_text(app)
        await pilot.press("right")
        assert modal.token == 1


async def test_gap_mode_without_trainer_logprobs_says_when_they_are_recorded(kit):
    source = kit.Source(with_tokens(kit, trainer=False))
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_completion(kit, pilot, source)
        await pilot.press("t", "t")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "no trainer log-probs for this completion" in text
        assert "telemetry.logprob_diff_every" in text
        assert "engine -0.100" in text  # the engine's values still shown


async def test_a_completion_without_tokens_says_why(kit):
    source = kit.Source(with_tokens(kit, telemetry=2))
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_completion(kit, pilot, source, step=3, group=1)
        await pilot.press("t")
        await kit.settle(pilot)
        legend = str(app.screen.query_one("#token-legend", Static).content)
        assert ("engine mode: no tokens: the token view records telemetry.token_view_groups groups per step "
                "(this run: 2); this group is not one of them (t: next mode)") == legend
        assert "telemetry.token_view_groups" in kit.screen_text(app)


# -- snapshots ------------------------------------------------------------------------------------

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["engine", "gap"])
def test_snapshot_token_view(snap_compare, kit, size, mode):
    source = kit.Source(with_tokens(kit))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await open_completion(kit, pilot, source)
        await pilot.press(*(["t"] if mode == "engine" else ["t", "t"]), "right", "right")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
