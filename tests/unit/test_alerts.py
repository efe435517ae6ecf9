"""Alert rules are pure functions of real StepMetrics events: no fakes needed."""

import math

from backend.protocol.events import StepMetrics, StepTimes
from backend.settings import AlertsSection
from backend.telemetry.alerts import AlertMonitor, check


def metrics(step, reward=0.5, total=0.1, **kw):
    return StepMetrics(step=step, reward_mean=reward, reward_std=0.1, times=StepTimes(total=total), **kw)


def rules(findings):
    return {f.rule for f in findings}


CFG = AlertsSection()
HIST = [metrics(i) for i in range(1, 11)]


def test_quiet_run_raises_nothing():
    assert check(CFG, metrics(11), HIST) == []


def test_each_rule_fires_with_evidence():
    f = check(CFG, metrics(11, frac_reward_zero_std=0.9), HIST)
    assert rules(f) == {"zero_std"} and f[0].value == 0.9 and f[0].threshold == 0.75 and f[0].suggestion
    assert rules(check(CFG, metrics(11, truncated_ratio=0.8), HIST)) == {"truncation"}
    assert rules(check(CFG, metrics(11, reward=0.1), HIST)) == {"reward_collapse"}
    assert rules(check(CFG, metrics(11, entropy=0.01), HIST)) == {"entropy_collapse"}
    assert rules(check(CFG, metrics(11, total=0.6), HIST)) == {"slow_step"}
    kl_hist = [metrics(i, kl=0.01) for i in range(1, 11)]
    assert rules(check(CFG, metrics(11, kl=0.2), kl_hist)) == {"kl_blowup"}


def test_a_slow_step_that_was_compiling_says_so():
    plain = check(CFG, metrics(11, total=0.6), HIST)[0]
    assert "compiling" not in plain.message and "reward functions" in plain.suggestion
    slow = StepMetrics(step=12, reward_mean=0.5, reward_std=0.1, times=StepTimes(total=102.6, train=102.4, compile=101.9))
    f = check(CFG, slow, HIST)[0]
    assert f.rule == "slow_step" and "101.90 s of it compiling the update" in f.message, f.message
    assert "compiles once for each new input variant" in f.suggestion


def test_non_finite_pauses():
    f = check(CFG, metrics(11, loss=math.nan), HIST)
    assert rules(f) == {"non_finite"} and f[0].action == "pause" and f[0].severity == "critical"


def test_window_rules_wait_for_a_full_window():
    assert check(CFG, metrics(3, reward=0.0, total=9.0), HIST[:2]) == []


def test_monitor_fires_once_until_cleared_and_pauses_on_request():
    emitted, pauses = [], []
    cfg = AlertsSection.model_validate({"truncation": {"action": "pause"}})
    mon = AlertMonitor(cfg, emitted.append, pauses.append)
    for step in range(1, 4):
        mon.on_metrics(metrics(step, truncated_ratio=0.9))
    assert [a.rule for a in emitted] == ["truncation"] and len(pauses) == 1
    assert emitted[0].lasting and emitted[0].state == "raised" and emitted[0].since == 1
    mon.on_metrics(metrics(4, truncated_ratio=0.0))
    mon.on_metrics(metrics(5, truncated_ratio=0.9))
    mon.on_metrics(metrics(6, truncated_ratio=0.0))
    mon.on_metrics(metrics(7, truncated_ratio=0.0))
    assert [a.rule for a in emitted] == ["truncation"]  # flickering around the threshold: still one alert
    mon.on_metrics(metrics(8, truncated_ratio=0.0))  # the third step in a row without it
    cleared = emitted[-1]
    assert (cleared.rule, cleared.state, cleared.since, cleared.step) == ("truncation", "cleared", 1, 8)
    mon.on_metrics(metrics(9, truncated_ratio=0.9))  # cleared, so it may be raised again
    assert [(a.rule, a.state) for a in emitted] == [("truncation", "raised"), ("truncation", "cleared"), ("truncation", "raised")]
    assert emitted[-1].since == 9 and len(pauses) == 2
    assert emitted[0].step == 1 and emitted[0].metric == "truncated_ratio"


def test_logprob_diff_jump_against_its_measured_window():
    """Only measured steps count (None elsewhere); a jump to 3x the median and >= 0.05 fires."""
    hist = [metrics(i, logprob_diff_mean=0.02 if i % 5 == 0 else None) for i in range(1, 11)]
    assert check(CFG, metrics(11, logprob_diff_mean=0.03), hist) == []
    assert check(CFG, metrics(11, logprob_diff_mean=0.04), [metrics(i) for i in range(1, 11)]) == []  # no baseline yet
    f = check(CFG, metrics(11, logprob_diff_mean=0.09), hist)
    assert rules(f) == {"logprob_diff"} and f[0].value == 0.09 and "resync" in f[0].suggestion
