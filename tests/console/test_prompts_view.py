"""Per-prompt learning curves: the classification (pure), the prompts screen (`r`), the samples
screen's link to a group's prompt (`h`)."""

from __future__ import annotations

import pytest

from backend.protocol.events import Completion, RunResumed, RunStarted, SampleGroup, StateChanged, StepMetrics, StepTimes
from console.app import RLConsoleApp
from console.prompt_curves import MAX_POINTS, PromptTracker
from console.screens.prompts import PromptsScreen
from console.screens.samples import SamplesScreen
from console.state import RunState
from console.widgets.groups_table import GroupsTable
from console.widgets.prompt_curves_table import PromptCurvesTable, common_prefix

TS0 = 1_700_000_000.0
G = 4


def group(step: int, index: int, prompt: str, rewards: list[float], *, ts: float | None = None) -> SampleGroup:
    mean = sum(rewards) / len(rewards)
    std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
    return SampleGroup(
        ts=ts if ts is not None else TS0 + step, step=step, group=index, prompt=prompt, weight_version=step - 1,
        reward_mean=mean, reward_std=std,
        completions=[Completion(text=f"answer {i} to {prompt[-8:]}", rewards={"score": r}, reward=r, advantage=0.0,
                                length=4, truncated=False) for i, r in enumerate(rewards)],
    )


#: what each prompt's groups score, step by step (G = 4 completions a group; rewards in [0, 1])
CURVES = {
    "Solve: 2 + 2 = ?": [[1, 1, 1, 1]] * 4,  # always solved
    "Solve: the Riemann hypothesis": [[0, 0, 0, 0]] * 4,  # never solved
    "Solve: 17 * 23 = ?": [[0, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1]],  # learning
    "Solve: 91 / 7 = ?": [[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 1]],  # regressed
    "Solve: 5 - 8 = ?": [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]],  # mixed
}
EXPECTED = {
    "Solve: 2 + 2 = ?": "always solved",
    "Solve: the Riemann hypothesis": "never solved",
    "Solve: 17 * 23 = ?": "learning",
    "Solve: 91 / 7 = ?": "regressed",
    "Solve: 5 - 8 = ?": "mixed",
}


def curves_run(steps: int = 4) -> list:
    events: list = [
        RunStarted(ts=TS0, run_id="20240501-120000-demo", profile="default", model="tiny", task="arith", engine="vllm-cpu",
                   reward_functions=["score"], reward_weights=[1.0], params={}),
        StateChanged(ts=TS0, state="running"),
    ]
    for step in range(1, steps + 1):
        batch = [group(step, k, prompt, CURVES[prompt][step - 1]) for k, prompt in enumerate(CURVES)]
        events += batch
        mean = sum(g.reward_mean for g in batch) / len(batch)
        events.append(StepMetrics(ts=TS0 + step + 0.5, step=step, reward_mean=mean, reward_std=0.4,
                                  rewards_by_function={"score": mean}, times=StepTimes(total=1.0), weight_version=step))
    return [e.model_copy(update={"seq": i}) for i, e in enumerate(events)]


# -- the classification (pure) ------------------------------------------------------------------

def test_each_prompt_gets_its_status_from_its_groups_and_the_run_reward_range():
    state = RunState()
    for event in curves_run():
        state.apply(event)
    assert state.prompts.reward_range == (0.0, 1.0)
    assert {p: state.prompts.status(p) for p in CURVES} == EXPECTED
    assert state.prompts.counts() == {"always solved": 1, "never solved": 1, "learning": 1, "regressed": 1, "mixed": 1}
    h = state.prompts.histories["Solve: 17 * 23 = ?"]
    assert (h.groups, h.zero_std, h.first_step, h.last_step) == (4, 1, 1, 4)
    assert h.means == [0.25, 0.5, 0.75, 1.0]
    # rows: grouped by status in the documented order; a filter keeps only some
    assert [s for s, _ in state.prompts.rows()] == ["always solved", "never solved", "learning", "regressed", "mixed"]
    assert [h.prompt for _, h in state.prompts.rows(frozenset({"regressed"}))] == ["Solve: 91 / 7 = ?"]


def test_a_constant_reward_makes_every_prompt_always_or_never_solved():
    for value, expected in ((1.0, "always solved"), (0.0, "never solved")):
        tracker = PromptTracker()
        for step in range(1, 4):
            for k in range(3):
                tracker.add(group(step, k, f"prompt {k}", [value] * G))
        assert tracker.reward_range == (value, value)
        assert {tracker.status(f"prompt {k}") for k in range(3)} == {expected}


def test_declared_bounds_win_over_the_rewards_seen():
    """A task whose functions declare their ranges: "always solved" means at the top of what the
    task can pay, not at the top of what was seen so far."""
    seen, declared = PromptTracker(), PromptTracker()
    declared.bounds = (0.0, 2.0)
    for tracker in (seen, declared):
        for step in range(1, 4):
            tracker.add(group(step, 0, "half", [1.0] * G))
            tracker.add(group(step, 1, "none", [0.0] * G))
    assert seen.reward_range == (0.0, 1.0) and declared.reward_range == (0.0, 2.0)
    assert seen.status("half") == "always solved"
    assert declared.status("half") == "mixed"  # 1.0 of a possible 2.0: not solved
    assert seen.status("none") == declared.status("none") == "never solved"


def test_the_status_follows_the_range_a_prompt_once_at_the_top_is_not_solved_when_the_top_rises():
    tracker = PromptTracker()
    tracker.add(group(1, 0, "a", [0.5] * G))
    tracker.add(group(1, 1, "b", [0.0] * G))
    assert tracker.status("a") == "always solved"  # 0.5 is the highest reward seen so far
    tracker.add(group(2, 1, "b", [0.0, 1.0, 0.0, 1.0]))  # the range grows to [0, 1]
    assert tracker.status("a") == "mixed"  # std 0, but in the middle of the range: neither
    assert tracker.status("b") == "learning"  # 0 -> 0.5: half of the range [0, 1]


def test_one_dip_below_the_best_counts_as_regressed_and_recovering_clears_it():
    h = PromptTracker()
    for step, rewards in enumerate(([0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]), start=1):
        h.add(group(step, 0, "p", rewards))
    assert h.status("p") == "regressed"  # best earlier 0.75, now 0.25: fell by half the range
    h.add(group(4, 0, "p", [1, 1, 1, 1]))
    assert h.status("p") == "learning"


def test_memory_is_bounded_per_prompt_and_in_prompts():
    tracker = PromptTracker(max_prompts=10)
    for step in range(1, MAX_POINTS + 40):
        tracker.add(group(step, 0, "kept", [0, 1, 0, 1]))
    h = tracker.histories["kept"]
    assert h.groups == MAX_POINTS + 39 and len(h.points) == MAX_POINTS
    for k in range(25):
        tracker.add(group(500, k, f"other {k}", [0, 1, 0, 1]))
    assert len(tracker) == 10 and tracker.dropped == 16
    assert "kept" not in tracker.histories  # the least recently sampled went first
    assert "other 24" in tracker.histories


def test_a_resume_forgets_the_replaced_steps():
    state = RunState()
    for event in curves_run():
        state.apply(event)
    state.apply(RunResumed(ts=TS0 + 10, step=2, checkpoint="ckpt-2"))
    h = state.prompts.histories["Solve: 17 * 23 = ?"]
    assert (h.groups, h.last_step, h.means) == (2, 2, [0.25, 0.5])


def test_the_prompt_column_leaves_out_a_shared_instruction_at_a_word_boundary():
    assert common_prefix(["Reverse the word 'lemon'.", "Reverse the word 'tiger'."]) == len("Reverse the word ")
    assert common_prefix(["abc x", "abd y"]) == 0  # too short to be worth it
    assert common_prefix(["only one"]) == 0


# -- the screen ---------------------------------------------------------------------------------

async def open_prompts(kit, pilot, source) -> PromptsScreen:
    await kit.settle(pilot, source)
    await pilot.press("r")
    await kit.settle(pilot)
    assert isinstance(pilot.app.screen, PromptsScreen)
    return pilot.app.screen


async def test_r_lists_prompts_by_status_and_f_filters(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_prompts(kit, pilot, source)
        table = screen.query_one(PromptCurvesTable)
        assert table.row_count == 5
        assert [table.get_row_at(r)[0] for r in range(5)] == ["always solved", "never solved", "learning", "regressed", "mixed"]
        text = kit.screen_text(app)
        assert "5/5 prompts" in text and "always 1 · never 1 · learning 1 · regressed 1 · mixed 1" in text
        assert "2 + 2 = ?" in text
        await pilot.press("f")  # no signal: always + never solved
        await kit.settle(pilot)
        assert table.row_count == 2 and "f:no signal" in kit.screen_text(app)
        for _ in range(4):  # ... always, never, learning, regressed
            await pilot.press("f")
        await kit.settle(pilot)
        assert table.row_count == 1 and table.get_row_at(0)[0] == "regressed"
        assert "91 / 7" in kit.screen_text(app)


async def test_enter_on_a_prompt_shows_its_groups_over_time_and_their_completions(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_prompts(kit, pilot, source)
        for _ in range(2):
            await pilot.press("down")
        await pilot.press("enter")  # learning: 17 * 23
        await kit.settle(pilot)
        groups = screen.query_one("#prompt-groups", GroupsTable)
        assert groups.has_focus
        assert groups.row_count == 4
        assert [groups.get_row_at(r)[0].split()[0] for r in range(4)] == ["s4", "s3", "s2", "s1"]  # newest first
        text = kit.screen_text(app)
        assert "4 groups, 1 zero-std, steps 1–4, 4 held" in text
        assert "first 0.250 → last 1.000" in text
        await pilot.press("enter")  # its completions
        await kit.settle(pilot)
        assert "answer 0 to * 23 = ?" in kit.screen_text(app)
        await pilot.press("escape")
        await kit.settle(pilot)
        assert screen.query_one(PromptCurvesTable).has_focus


async def test_h_on_a_zero_std_group_opens_its_prompt(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await kit.settle(pilot)
        samples = app.screen
        assert isinstance(samples, SamplesScreen)
        await pilot.press("z")  # only zero-std groups
        await kit.settle(pilot)
        table = samples.query_one(GroupsTable)
        target = next(r for r in range(table.row_count) if "Riemann" in table.get_row_at(r)[1])
        for _ in range(target):
            await pilot.press("down")
        await kit.settle(pilot)
        assert "prompt: never solved (h)" in kit.screen_text(app)
        await pilot.press("h")
        await kit.settle(pilot)
        screen = app.screen
        assert isinstance(screen, PromptsScreen)
        assert screen.prompt == "Solve: the Riemann hypothesis"
        assert screen.query_one(PromptCurvesTable).selected_prompt == "Solve: the Riemann hypothesis"
        assert "never solved  4 groups, 4 zero-std" in kit.screen_text(app)


async def test_h_opens_the_prompt_even_when_the_filter_hides_it(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_prompts(kit, pilot, source)
        await pilot.press("f", "f", "f")  # never solved only
        await kit.settle(pilot)
        await pilot.press("s")
        await kit.settle(pilot)
        await pilot.press("h")  # the newest group: 5 - 8 (mixed)
        await kit.settle(pilot)
        assert app.screen is screen and screen.filter_name == "all"
        assert screen.prompt == "Solve: 5 - 8 = ?"


async def test_typing_r_a_h_in_the_filter_stays_in_the_filter(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("slash", "r", "a", "h", "f")
        await kit.settle(pilot)
        assert app.current_mode == "samples" and isinstance(app.screen, SamplesScreen)
        assert app.focused is not None and getattr(app.focused, "value", None) == "rahf"


async def test_a_prompt_no_longer_held_is_said_so(kit):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("s")
        await kit.settle(pilot)
        app.state.prompts.histories.pop("Solve: 5 - 8 = ?")  # as if dropped past the tracker's bound
        await pilot.press("h")  # the newest group is 5 - 8's
        await kit.settle(pilot)
        assert "no longer held" in app.status[0]
        assert isinstance(app.screen, SamplesScreen)  # it stays where it was


async def test_empty_state_says_what_will_come(kit):
    source = kit.Source(kit.starting_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_prompts(kit, pilot, source)
        assert "no groups yet: prompts appear with their first sampled group" in kit.screen_text(app)


async def test_a_real_run_shape_classifies_its_prompts(kit):
    """The conftest run (reverse-word task, 2 functions): every prompt gets a status."""
    source = kit.Source(kit.make_run(steps=12))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_prompts(kit, pilot, source)
        counts = app.state.prompts.counts()
        assert sum(counts.values()) == len(app.state.prompts) == 10
        assert screen.query_one(PromptCurvesTable).row_count == 10


# -- snapshots ----------------------------------------------------------------------------------

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_prompts(snap_compare, kit, size):
    source = kit.Source(curves_run())
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("r")
        await kit.settle(pilot)
        await pilot.press("down", "down", "enter")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
