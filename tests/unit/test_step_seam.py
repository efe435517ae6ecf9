"""The step seam's pure parts: the event bus (log first, then listeners; the cut for late
joiners; a log that cannot be written), the checked join of a step's completions, rewards
and advantages, and the TRL shims' start-up check."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from backend.bus import EventBus, LogUnwritable
from backend.engine.base import GeneratedCompletion, Sampling
from backend.protocol import events as E
from backend.runstore import RunStore
from backend.training import report
from backend.training.trainer import RolloutBatch


def _batch(groups: int = 2, g: int = 3) -> RolloutBatch:
    comps = [[GeneratedCompletion(token_ids=[1] * (k + 1), logprobs=[], text=f"p{p}c{k}", finish_reason="length" if k == 0 else "stop")
              for k in range(g)] for p in range(groups)]
    return RolloutBatch(step=7, prompts=[f"prompt {p}" for p in range(groups)], groups=comps, weight_version=6,
                        sampling=Sampling(n=g, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8), generate_s=0.1)


def test_the_join_lines_up_every_completion_with_its_rewards_and_advantage():
    b = _batch()
    rewards = {"a": [float(i) for i in range(6)], "b": [None, 1.0, 1.0, 1.0, float("nan"), 1.0]}
    adv = [0.5 * i for i in range(6)]
    joined = report.join_scores(b, rewards, adv, ["a", "b"], [1.0, 2.0])
    rows = [r for g in joined for r in g]
    assert [r.completion.text for r in rows] == ["p0c0", "p0c1", "p0c2", "p1c0", "p1c1", "p1c2"]
    assert [r.advantage for r in rows] == adv
    assert rows[0].total == 0.0 and rows[0].rewards == {"a": 0.0, "b": None}  # None: not applicable, not counted
    assert rows[4].total is None and rows[4].rewards["b"] is None  # NaN stays out of the report
    assert rows[5].total == 5.0 + 2.0
    groups = report.sample_groups(b, joined)
    assert [g.group for g in groups] == [0, 1] and groups[1].completions[2].reward == 7.0
    assert groups[0].completions[0].truncated and groups[0].weight_version == 6 and groups[0].step == 7
    finished, truncated = report.reward_by_ending(joined)
    assert truncated == pytest.approx((0.0 + 5.0) / 2) and finished == pytest.approx((3.0 + 4.0 + 7.0) / 3)  # row 4 (NaN) in neither


@pytest.mark.parametrize("rewards, adv, match", [
    ({"a": [1.0] * 6}, [0.0] * 5, "5 advantages for 6 completions"),
    ({"a": [1.0] * 7}, [0.0] * 6, "reward function a gave 7 values for 6 completions"),
    ({}, [0.0] * 6, "no rewards recorded for reward function a"),
])
def test_a_join_that_does_not_line_up_is_an_error_naming_the_piece(rewards, adv, match):
    with pytest.raises(report.ScoreJoinError, match=match):
        report.join_scores(_batch(), rewards, adv, ["a"], [1.0])


def test_a_late_joiner_gets_every_event_once_across_the_cut(tmp_path):
    bus = EventBus(RunStore(tmp_path / "events.db"))
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            bus.emit(E.LogLine(level="info", message=f"line {i}"))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        while bus.last_seq < 200:
            pass
        live: list[int] = []
        with bus.cut() as cut:  # a console attaching mid-flood
            bus.listeners.append(lambda ev: live.append(ev.seq))
        while len(live) < 200:
            pass
    finally:
        stop.set()
        t.join()
    logged = [ev.seq for ev in bus.store.read(0, cut)]
    assert logged == list(range(cut)) and live[0] == cut
    assert logged + live == list(range(len(logged) + len(live)))  # nothing twice, nothing missed
    assert len(bus.read_raw(0, cut)) == cut


def test_a_log_that_cannot_be_written_ends_the_run_once_with_its_reason(tmp_path):
    store = RunStore(tmp_path / "events.db")
    told: list[str] = []
    bus = EventBus(store, on_broken=told.append)
    seen: list = []
    bus.subscribe(lambda ev: 1 / 0)  # a broken listener never stops the run
    bus.subscribe(seen.append)
    bus.emit(E.LogLine(level="info", message="ok"))
    assert len(seen) == 1
    store._db.close()  # the log goes away under the run
    with pytest.raises(LogUnwritable, match="ProgrammingError"):
        bus.emit(E.LogLine(level="info", message="lost"))
    assert told == [bus.broken] and "cannot be written" in bus.broken
    with pytest.raises(LogUnwritable):  # and stays broken: nothing is recorded out of order later
        bus.emit(E.LogLine(level="info", message="later"))
    assert len(told) == 1 and len(seen) == 1
    assert isinstance(sqlite3.ProgrammingError("x"), sqlite3.Error)


def test_the_trl_shims_find_their_targets_and_a_missing_one_is_named(monkeypatch):
    from trl import GRPOTrainer

    from backend.training import trl_compat

    assert trl_compat.problems() == []
    trl_compat.check()
    monkeypatch.delattr(GRPOTrainer, trl_compat.SCORE_HOOK)
    with pytest.raises(trl_compat.TRLCompatError, match=r"TRL \S+ lacks GRPOTrainer._generate_and_score_completions.*trl>=1.16"):
        trl_compat.check()
