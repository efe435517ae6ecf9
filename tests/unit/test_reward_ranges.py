"""Reward functions may declare their natural range (`func.reward_range = (low, high)`); the run
announces it in RunStarted.reward_ranges (one per function, None where none is declared) so the
console can mark it on the reward chart. Nothing is guessed."""

from __future__ import annotations

import textwrap

import pytest

from backend.protocol import events as E
from backend.protocol.codec import decode_event, encode_event
from backend.settings import RunProfile
from backend.training import factory
from backend.training.rewards import RewardLoadError, RewardRecorder, declared_range


def test_the_embedded_task_declares_its_ranges_and_they_reach_the_task_parts():
    parts = factory.load_task(RunProfile(), RewardRecorder())
    assert parts.reward_names == ["char_match", "clean_stop"]
    assert parts.reward_ranges == [(0.0, 1.0), (0.0, 1.0)]
    # the recorder's wrapper keeps the function's attributes (TRL sees the same function)
    assert [declared_range(f) for f in parts.reward_funcs] == [(0.0, 1.0), (0.0, 1.0)]


def test_a_users_functions_declare_a_range_or_none_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def bounded(prompts, completions, **kw):
            return [0.5] * len(completions)
        bounded.reward_range = (-1, 2)

        def unbounded(prompts, completions, **kw):
            return [0.5] * len(completions)

        def bad(prompts, completions, **kw):
            return [0.5] * len(completions)
        bad.reward_range = (1.0, float("inf"))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    profile = RunProfile(task={"reward_funcs": ["my_rewards:bounded", "my_rewards:unbounded"]})
    assert factory.load_task(profile, RewardRecorder()).reward_ranges == [(-1.0, 2.0), None]
    with pytest.raises(RewardLoadError, match=r"reward function my_rewards:bad: reward_range must be finite"):
        factory.load_task(RunProfile(task={"reward_funcs": ["my_rewards:bad"]}), RewardRecorder())

    def f():
        pass

    f.reward_range = "0..1"
    with pytest.raises(RewardLoadError, match="reward_range must be two numbers"):
        declared_range(f)
    f.reward_range = (2, 1)
    with pytest.raises(RewardLoadError, match="low <= high"):
        declared_range(f)


def test_run_started_carries_the_ranges_and_an_older_event_without_them_still_decodes():
    ev = E.RunStarted(run_id="r", profile="p", model="m", task="t", engine="e", reward_functions=["a", "b"],
                      reward_ranges=[(0.0, 1.0), None])
    back = decode_event(encode_event(ev))
    assert back.reward_ranges == [(0.0, 1.0), None]
    older = encode_event(ev).replace(b'"reward_ranges":[[0.0,1.0],null],', b"")
    assert b"reward_ranges" not in older and decode_event(older).reward_ranges == []
