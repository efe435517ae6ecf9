"""Policy diff (`v`): PolicyProbe events in RunState (pure), the word diff (pure), the screen
driven through Pilot with real protocol events, snapshots at 80x24 and 160x48.

Update snapshots after an intended visual change with:
pytest tests/console/test_probes.py --snapshot-update
"""

from __future__ import annotations

import pytest

from backend.protocol.events import PolicyProbe, ProbeOutput, RunResumed, RunStarted, StateChanged
from console.app import RLConsoleApp
from console.screens.probes import ProbesScreen, empty_message, next_probe_step, probe_rows
from console.state import RunState, describe
from console.widgets.probe_list import ProbeList
from console.widgets.probe_versions import ProbeVersions
from console.widgets.word_diff import ADDED, REMOVED, WordDiff, word_diff

PROMPTS = (
    "Reverse the word 'apple'. Answer with the reversed word only.",
    "Reverse the word 'river'. Answer with the reversed word only.",
    "Reverse the word 'stone'. Answer with the reversed word only.",
)
# what the policy says for each prompt as training goes on (greedy: one output per version)
OUTPUTS = {
    PROMPTS[0]: ["Let me think about apple step by step", "the answer is elppa maybe", "elppa", "elppa"],
    PROMPTS[1]: ["river river river", "revir", "revir", "revir"],
    PROMPTS[2]: ["stone", "stone", "enots", "enots"],
}


def output(prompt: str, text: str) -> ProbeOutput:
    target = prompt.split("'")[1][::-1]
    match = sum(a == b for a, b in zip(text, target)) / len(target)
    first = 1.0 if text[:1] == target[:1] else 0.0
    return ProbeOutput(prompt=prompt, output=text, rewards={"char_match": round(match, 3), "first_char": first},
                       reward=round(match + first, 3), length=len(text.split()) + 1, truncated=len(text) > 30)


def probe(i: int, *, every: int = 10, ts: float = 0.0, seq: int = -1) -> PolicyProbe:
    """The i-th probe of a run (i = 0: the initial weights, at step 0, version 0)."""
    return PolicyProbe(seq=seq, ts=ts, step=i * every, weight_version=i * every,
                       probes=[output(p, OUTPUTS[p][min(i, 3)]) for p in PROMPTS], duration_s=0.4)


def run_with_probes(kit, steps: int = 24, every: int = 10) -> list:
    """kit.make_run with its RunStarted telling probe_every and a probe after every N-th step."""
    events = kit.make_run(steps=steps)
    started = events[0].model_copy(update={"profile_data": {"telemetry": {"probe_every": every, "probes": 3}}})
    out = [started]
    ts0 = events[0].ts
    for e in events[1:]:
        if e.kind == "state_changed" and e.state == "running":
            out += [e, probe(0, every=every, ts=e.ts)]
            continue
        out.append(e)
        if e.kind == "weights_synced" and e.step % every == 0:
            out.append(probe(e.step // every, every=every, ts=e.ts + 0.1))
    return [e.model_copy(update={"seq": i, "ts": e.ts or ts0}) for i, e in enumerate(out)]


def fed(events) -> RunState:
    state = RunState()
    for e in events:
        state.apply(e)
    return state


# -- state (pure) ---------------------------------------------------------------------------

def test_probes_are_kept_per_version_with_history_newest_first(kit):
    state = fed(run_with_probes(kit, steps=24))
    assert state.probe_every == 10
    assert [p.weight_version for p in state.probes] == [0, 10, 20]
    assert state.probe_prompts() == list(PROMPTS)
    history = state.probe_history(PROMPTS[0])
    assert [(p.weight_version, o.output) for p, o in history] == [
        (20, "elppa"), (10, "the answer is elppa maybe"), (0, "Let me think about apple step by step")]
    rows = probe_rows(state)
    assert [(r.changes, r.versions) for r in rows] == [(2, 3), (1, 3), (1, 3)]
    assert rows[0].reward == 2.0 and rows[0].first_reward == 0.0


def test_a_version_probed_again_replaces_the_first_and_a_resume_drops_the_lost_ones(kit):
    state = fed(run_with_probes(kit, steps=24))
    again = probe(1).model_copy(update={"probes": [output(PROMPTS[0], "again")]})
    state.apply(again)
    assert [p.weight_version for p in state.probes] == [0, 20, 10]
    assert state.probe_history(PROMPTS[0])[0][1].output == "again"
    state.apply(RunResumed(step=12, checkpoint="ckpt-12"))
    assert [p.weight_version for p in state.probes] == [0, 10]


def test_probe_ring_is_bounded_and_keeps_the_first_probe():
    state = RunState(max_probes=5)
    for i in range(40):
        state.apply(probe(i, every=1))
    assert [p.weight_version for p in state.probes] == [35, 36, 37, 38, 39]
    # the initial weights' outputs stay: "what changed since the start" survives a long run
    assert [p.weight_version for p, _ in state.probe_history(PROMPTS[0])] == [39, 38, 37, 36, 35, 0]
    assert probe_rows(state)[0].first_reward == 0.0 and probe_rows(state)[0].versions == 6


def test_probe_event_is_described_in_the_log():
    text, level = describe(probe(2))
    assert text.startswith("probe at weights v20 (step 20): 3 prompts, mean reward") and level == "info"


@pytest.mark.parametrize("profile_data, step, expected", [
    ({"telemetry": {"probe_every": 0}}, 5, "Probes are off for this run (telemetry.probe_every = 0)"),
    ({"telemetry": {"probe_every": 10, "probes": 4}}, 0, "expected at the initial weights, before the first step"),
    ({"telemetry": {"probe_every": 10, "probes": 4}}, 13, "expected after step 20 (telemetry.probe_every = 10)"),
    ({"telemetry": {"probe_every": 10, "probes": 0, "probe_prompts": []}}, 3, "no probe prompts"),
    ({}, 0, "the run does not say telemetry.probe_every"),
    ({"telemetry": {"probe_every": 10, "probes": 4}}, -1, "This run recorded no policy probes (telemetry.probe_every = 10)"),
])
def test_empty_state_says_when_the_first_probe_is_expected(kit, profile_data, step, expected):
    state = RunState()
    state.apply(RunStarted(run_id="r", profile="p", profile_data=profile_data, model="m", task="t", engine="e"))
    if step < 0:  # an ended run: nothing more is expected
        state.apply(StateChanged(state="finished", reason="stopped at step 7", step=7))
    state.step = max(step, 0)
    assert expected in empty_message(state)
    assert next_probe_step(13, 10) == 20 and next_probe_step(20, 10) == 30


# -- word diff (pure) -----------------------------------------------------------------------

def test_word_diff_marks_removed_and_added_words():
    d = word_diff("the answer is elppa maybe", "the answer is elppa")
    assert (d.added, d.removed) == (0, 1) and not d.same
    assert d.text.plain == "the answer is elppa maybe "
    assert [(d.text.plain[s.start:s.end], s.style) for s in d.text.spans] == [("maybe", REMOVED)]
    d = word_diff("revir", "elppa and revir")
    assert (d.added, d.removed) == (2, 0)
    assert [(d.text.plain[s.start:s.end], s.style) for s in d.text.spans] == [("elppa", ADDED), ("and", ADDED)]
    d = word_diff("a b\nc", "a  b c")
    assert d.same and d.text.plain == "a  b c"  # spacing is not a change; the newer layout is shown


# -- the screen (Pilot) ---------------------------------------------------------------------

async def open_probes(kit, events, size=(100, 30), **app_kw):
    source = kit.Source(events)
    app = RLConsoleApp(source, **app_kw)
    return app, source


def diff_plain(app) -> str:
    return app.screen.query_one(WordDiff).plain


async def test_v_shows_each_probe_and_its_versions_with_a_diff_of_the_newest_two(kit):
    app, source = await open_probes(kit, run_with_probes(kit, steps=24))
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)
        assert isinstance(app.screen, ProbesScreen)
        plist = app.screen.query_one(ProbeList)
        assert plist.row_count == 3 and plist.get_row_at(0)[1:4] == ["2.000", "+2.000", "2/2"]
        versions = app.screen.query_one(ProbeVersions)
        assert [versions.get_row_at(r)[:3] for r in range(3)] == [["to", "v20", "20"], ["from", "v10", "10"], ["", "v0", "0"]]
        assert versions.get_row_at(0)[-2:] == ["≠", "elppa"]
        text = diff_plain(app)
        assert "v10 (step 10) → v20 (step 20)" in text and "-4 / +0 words" in text
        assert "reward 0.200 → 2.000" in text and "first_char 0.000 → 1.000" in text
        assert "policy probes: 3 prompts · 3 versions · every 10 steps · next after step 30" in kit.screen_text(app)

        await pilot.press("left_square_bracket")  # from: one older
        await kit.settle(pilot)
        assert "v0 (step 0) → v20 (step 20)" in diff_plain(app)
        await pilot.press("left_square_bracket")  # already the oldest: stays
        await kit.settle(pilot)
        assert "v0 (step 0) → v20 (step 20)" in diff_plain(app)
        await pilot.press("left_curly_bracket")  # to: one older (v10); from v0 still older
        await kit.settle(pilot)
        assert "v0 (step 0) → v10 (step 10)" in diff_plain(app)
        assert [versions.get_row_at(r)[0] for r in range(3)] == ["", "to", "from"]

        source.push(probe(3, ts=kit.TS0 + 500))  # a new version: `to` was moved by hand, so it stays
        await kit.wait_for(pilot, lambda: len(app.state.probes) == 4)
        await kit.settle(pilot)
        assert "v0 (step 0) → v10 (step 10)" in diff_plain(app) and versions.row_count == 4
        await pilot.press("right_curly_bracket", "right_curly_bracket")  # back to the newest: follows again
        await kit.settle(pilot)
        assert "v0 (step 0) → v30 (step 30)" in diff_plain(app)
        source.push(probe(4, ts=kit.TS0 + 600))
        await kit.wait_for(pilot, lambda: len(app.state.probes) == 5)
        await kit.settle(pilot)
        assert "v0 (step 0) → v40 (step 40)" in diff_plain(app)
        assert "-8 / +1 words" in diff_plain(app)
        assert app.screen.query_one(ProbeVersions).get_row_at(0)[:2] == ["to", "v40"]


async def test_selecting_a_probe_and_enter_on_a_version(kit):
    app, source = await open_probes(kit, run_with_probes(kit, steps=24))
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)
        await pilot.press("down")  # the second prompt: the same output at v10 and v20
        await kit.settle(pilot)
        assert "'river'" in diff_plain(app) and "same text" in diff_plain(app)
        await pilot.press("down")  # the third prompt: stone -> enots at v20
        await kit.settle(pilot)
        assert "'stone'" in diff_plain(app) and "v10 (step 10) → v20 (step 20)" in diff_plain(app)
        assert "-1 / +1 words" in diff_plain(app)
        await pilot.press("tab")  # to the versions table
        await kit.settle(pilot)
        assert isinstance(app.focused, ProbeVersions)
        await pilot.press("down", "down", "enter")  # v0: compare from it
        await kit.settle(pilot)
        assert "v0 (step 0) → v20 (step 20)" in diff_plain(app)
        await pilot.press("up", "enter")  # v10 is older than `to`: from v10
        await kit.settle(pilot)
        assert "v10 (step 10) → v20 (step 20)" in diff_plain(app)


async def test_one_version_only_says_so_and_the_keys_explain(kit):
    events = [e for e in run_with_probes(kit, steps=4)]
    app, source = await open_probes(kit, events)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)
        assert "the only version recorded so far" in diff_plain(app)
        assert "Let me think about apple step by step" in diff_plain(app)
        await pilot.press("left_square_bracket")
        await kit.settle(pilot)
        assert app.status_history[-1] == ("warning", "policy diff: only one version recorded for this prompt so far")


@pytest.mark.parametrize("every, expected", [
    (0, "Probes are off for this run (telemetry.probe_every = 0)"),
    (10, "No policy probes yet: the first is expected after step 20"),
])
async def test_empty_states(kit, every, expected):
    events = kit.make_run(steps=12)
    events[0] = events[0].model_copy(update={"profile_data": {"telemetry": {"probe_every": every, "probes": 4}}})
    app, source = await open_probes(kit, events)
    async with app.run_test(size=(100, 30)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)
        assert expected in " ".join(kit.screen_text(app).split())
        await pilot.press("left_square_bracket")  # nothing to move: says why, no error
        await kit.settle(pilot)
        assert app.status_history[-1][0] == "warning"


async def test_replay_shows_the_probes_from_the_log_and_follows_the_scrubber(kit, tmp_path, monkeypatch):
    """`rl-console replay`: the probes come from the run's event log (SQLite) as every other
    event; scrubbing back (on another screen) shows only the versions probed by then."""
    from backend.runstore import RunStore
    from console import runs

    monkeypatch.setenv("RLC_HOME", str(tmp_path))
    rdir = tmp_path / "runs" / kit.RUN_ID
    rdir.mkdir(parents=True)
    store = RunStore(rdir / "events.db")
    store.append_many(run_with_probes(kit, steps=24))
    store.close()
    app = RLConsoleApp(runs.ReplaySource(kit.RUN_ID), run_id=kit.RUN_ID, replay=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await kit.wait_for(pilot, lambda: app._replay_loaded, what="replay loaded")
        await pilot.press("v")
        await kit.settle(pilot)
        assert app.screen.query_one(ProbeVersions).row_count == 3
        assert "v10 (step 10) → v20 (step 20)" in diff_plain(app)
        await pilot.press("d")
        for _ in range(10):  # step 24 -> 14: before the probe at step 20
            await pilot.press("left_square_bracket")
        await kit.wait_for(pilot, lambda: app.state.step == 14, what="scrubbed to step 14")
        await pilot.press("v")
        await kit.settle(pilot)
        assert app.screen.query_one(ProbeVersions).row_count == 2
        assert "v0 (step 0) → v10 (step 10)" in diff_plain(app)
        assert "next after step 20" in kit.screen_text(app)


# -- snapshots --------------------------------------------------------------------------------

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_policy_diff(snap_compare, kit, size):
    source = kit.Source(run_with_probes(kit, steps=24))
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        for key in ("v", "left_square_bracket"):
            await pilot.press(key)
            await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_policy_diff_empty(snap_compare, kit, size):
    events = kit.make_run(steps=12)
    events[0] = events[0].model_copy(update={"profile_data": {"telemetry": {"probe_every": 0}}})
    source = kit.Source(events)
    app = RLConsoleApp(source)

    async def run_before(pilot) -> None:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_a_reward_function_that_gave_the_newest_probe_nothing_is_named_with_why(kit):
    events = run_with_probes(kit, steps=24)
    last = max(i for i, e in enumerate(events) if e.kind == "policy_probe")
    events[last] = events[last].model_copy(update={"unscored": {"first_char": "raised ValueError: no letters"}})
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 40)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("v")
        await kit.settle(pilot)
        assert "not scored: first_char raised ValueError: no letters" in kit.screen_text(app)
