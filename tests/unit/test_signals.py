"""What a batch says beyond its reward (diversity, length, ground truth) and the rules that
watch it over a window. Pure logic on the real data types."""

from __future__ import annotations

import pytest

from backend.engine.base import GeneratedCompletion, Sampling
from backend.protocol.events import StepMetrics
from backend.settings import load_profile
from backend.telemetry.alerts import AlertMonitor, check, shares
from backend.training import report
from backend.training.trainer import RolloutBatch


def _batch(groups: list[list[list[int]]]) -> RolloutBatch:
    comps = [[GeneratedCompletion(token_ids=ids, logprobs=[], text=str(ids), finish_reason="stop") for ids in g] for g in groups]
    return RolloutBatch(step=3, prompts=[f"p{i}" for i in range(len(groups))], groups=comps, weight_version=2,
                        sampling=Sampling(n=len(groups[0]), temperature=1.0, top_p=1.0, top_k=-1, max_tokens=64), generate_s=0.1)


def _join(b: RolloutBatch, rewards: dict[str, list[float]], weights: list[float]):
    n = b.num_completions
    return report.join_scores(b, rewards, [0.0] * n, list(rewards), weights)


def test_a_collapsed_group_and_a_varied_one():
    same = [[5, 6, 7, 8]] * 4
    varied = [[1, 2, 3, 4], [9, 9, 9, 9, 9, 9], [4, 3, 2, 1], [7, 8]]
    b = _batch([same, varied])
    sig = report.signals(_join(b, {"f": [1.0] * 8}, [1.0]))
    assert sig.distinct_ratio == pytest.approx((1 / 4 + 1) / 2)
    assert sig.unsolved_distinct_ratio is None and "diversity" not in sig.evidence  # every group at the best mean: solved
    wrong = report.signals(_join(_batch([same, varied, varied]), {"f": [0.0] * 4 + [1.0] * 8}, [1.0]))
    assert wrong.unsolved_distinct_ratio == pytest.approx(1 / 4)  # collapsed on a wrong answer
    assert wrong.evidence["diversity"] == [0]
    # overlap: 1.0 in the collapsed group; 0 in the varied one ([7, 8] has no 3-gram: its pairs with empty sets only count once)
    assert sig.group_overlap == pytest.approx((1.0 + 0.0) / 2)
    # repetition: [9]*6 has 4 trigrams, 1 distinct -> 0.75; every other completion 0
    assert sig.repetition == pytest.approx(0.75 / 7)
    assert sig.reward_length_corr is None  # a constant reward correlates with nothing


def test_a_reward_that_pays_for_length_shows_in_the_correlation_and_its_evidence():
    groups = [[[1] * k for k in (2, 4, 8, 16)], [[2] * k for k in (3, 5, 7, 9)], [[3] * k for k in (9, 3, 6, 2)]]
    b = _batch(groups)
    lengths = [len(c.token_ids) for g in b.groups for c in g]
    sig = report.signals(_join(b, {"long": [x / 16 for x in lengths]}, [1.0]))
    assert sig.reward_length_corr == pytest.approx(1.0)
    assert set(sig.evidence["length"]) == {0, 1, 2}


def test_ground_truth_gap_names_the_groups_with_high_reward_and_low_truth():
    b = _batch([[[1, 2, 3]] * 2, [[4, 5, 6]] * 2])
    joined = _join(b, {"judge": [1.0, 1.0, 1.0, 1.0], "exact": [0.0, 0.0, 1.0, 1.0]}, [1.0, 0.0])
    sig = report.signals(joined, ground_truth="exact")
    assert sig.ground_truth_mean == 0.5 and sig.evidence["ground_truth"][0] == 0


def _metrics(step, **kw) -> StepMetrics:
    base = dict(step=step, reward_mean=0.5, reward_std=0.1)
    return StepMetrics(**{**base, **kw})


def _rules(**alerts):
    return load_profile(None, alerts={"window": 4, **alerts}).alerts


def test_window_rules_fire_only_when_the_condition_held_for_the_whole_window():
    cfg = _rules()
    def m(i, **kw):
        return _metrics(i, **{"reward_length_corr": 0.9, "unsolved_distinct_ratio": 0.1, "completion_length_mean": 10.0 + 2 * i, **kw})

    hist = [m(i) for i in range(2)]
    assert not [f for f in check(cfg, m(2), hist)]  # 3 of 4 steps
    hist.append(m(2))
    rules = {f.rule: f for f in check(cfg, m(3), hist)}
    assert set(rules) == {"length_hacking", "diversity_collapse"}
    assert rules["length_hacking"].evidence == "length" and rules["diversity_collapse"].evidence == "diversity"
    flat = [m(i, completion_length_mean=10.0) for i in range(3)]  # lengths flat: a correlation alone is no hacking
    assert [f.rule for f in check(cfg, m(3, completion_length_mean=10.0), flat)] == ["diversity_collapse"]
    hist[1] = m(1, reward_length_corr=0.2, unsolved_distinct_ratio=0.9)  # one step in the window without it
    assert not check(cfg, m(3), hist)


def test_one_function_taking_over_the_weighted_reward():
    cfg = _rules()
    weights = {"correct": 1.0, "format": 0.5}
    m = [_metrics(i, rewards_by_function={"correct": 0.01, "format": 0.9}) for i in range(4)]
    assert shares(m[0], weights)["format"] == pytest.approx(0.45 / 0.46)
    assert [f.rule for f in check(cfg, m[-1], m[:-1], weights)] == ["reward_dominance"]
    assert not check(cfg, m[-1], m[:-1], {"correct": 1.0, "format": 0.01})  # weighted, it does not dominate
    assert not check(cfg, m[-1], m[:-1], None)


def test_reward_rising_with_a_flat_ground_truth_is_an_alert_with_evidence():
    cfg = _rules()
    emitted = []
    mon = AlertMonitor(cfg, emitted.append, lambda why: None)
    for i in range(4):
        mon.on_metrics(_metrics(i, reward_mean=0.2 + 0.1 * i, ground_truth_mean=0.3, evidence={"ground_truth": [2, 0]}))
    raised = [a for a in emitted if a.rule == "ground_truth_flat"]
    assert len(raised) == 1 and raised[0].severity == "critical" and raised[0].evidence == [[3, 2], [3, 0]]
    emitted.clear()
    mon2 = AlertMonitor(cfg, emitted.append, lambda why: None)
    for i in range(4):  # the ground truth follows the reward: learning, not hacking
        mon2.on_metrics(_metrics(i, reward_mean=0.2 + 0.1 * i, ground_truth_mean=0.2 + 0.1 * i))
    assert not [a for a in emitted if a.rule == "ground_truth_flat"]
