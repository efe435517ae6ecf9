"""Alert rules over the live metrics: never let a run fail silently.

Each rule looks at the newest `StepMetrics` (and a short window of earlier ones) and, when
its condition starts to hold, raises one lasting `Alert` with the evidence (metric, value,
threshold, step) and a suggested action. While it holds nothing more is sent (the console
shows it as active, with its current value); once it has not held for `CLEAR_AFTER`
consecutive steps a `cleared` event ends it, and only then can it be raised again (a rule
that flickers around its threshold stays one alert). A rule's `action` may ask the
controller to pause.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.protocol.events import Alert, StepMetrics


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    metric: str
    value: float | None
    threshold: float | None
    suggestion: str
    action: str = "alert"  # "alert" | "pause"


def _median(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def check(cfg, m: StepMetrics, history: list[StepMetrics]) -> list[Finding]:
    """Pure: the findings for metrics `m` given the earlier `history` (oldest first)."""
    out: list[Finding] = []
    r = cfg.zero_std
    if r.enabled and m.frac_reward_zero_std >= r.threshold:
        out.append(Finding("zero_std", "warning",
                           f"{m.frac_reward_zero_std:.0%} of groups have all-equal rewards: no learning signal from them",
                           "frac_reward_zero_std", m.frac_reward_zero_std, r.threshold,
                           "raise temperature or num_generations, or make the task harder/easier", r.action))
    r = cfg.truncation
    if r.enabled and m.truncated_ratio >= r.threshold:
        out.append(Finding("truncation", "warning",
                           f"{m.truncated_ratio:.0%} of completions hit max_tokens",
                           "truncated_ratio", m.truncated_ratio, r.threshold,
                           "raise max_tokens (e: edit parameters) or penalise overlong output", r.action))
    for name in ("loss", "grad_norm", "reward_mean", "kl"):
        v = getattr(m, name)
        if v is not None and not math.isfinite(v):
            out.append(Finding("non_finite", "critical", f"{name} is {v}", name, None, None,
                               "inspect the last groups; lower the learning rate; resume from the checkpoint", "pause"))
    window = history[-cfg.window:]
    r = cfg.reward_collapse
    base = _median(h.reward_mean for h in window)
    if r.enabled and base is not None and len(window) >= cfg.window and base - m.reward_mean >= r.drop:
        out.append(Finding("reward_collapse", "critical",
                           f"reward {m.reward_mean:.3f} fell {base - m.reward_mean:.3f} below the recent median {base:.3f}",
                           "reward_mean", m.reward_mean, base - r.drop,
                           "pause, look at the newest groups, lower the learning rate", r.action))
    r = cfg.kl_blowup
    kl_base = _median(h.kl for h in window)
    if r.enabled and m.kl is not None and m.kl >= r.min_value and kl_base is not None and m.kl >= r.factor * max(kl_base, 1e-9):
        out.append(Finding("kl_blowup", "critical", f"KL {m.kl:.4f} is {m.kl / max(kl_base, 1e-9):.1f}× the recent median",
                           "kl", m.kl, r.factor * kl_base, "lower the learning rate or raise beta", r.action))
    r = cfg.entropy_collapse
    if r.enabled and m.entropy is not None and m.entropy <= r.threshold:
        out.append(Finding("entropy_collapse", "warning", f"entropy {m.entropy:.3f} — the policy is nearly deterministic",
                           "entropy", m.entropy, r.threshold, "raise temperature; lower the learning rate", r.action))
    r = cfg.logprob_diff
    lp_base = _median(h.logprob_diff_mean for h in window)
    if (r.enabled and m.logprob_diff_mean is not None and lp_base is not None and m.logprob_diff_mean >= r.min_value
            and m.logprob_diff_mean >= r.factor * max(lp_base, 1e-9)):
        out.append(Finding("logprob_diff", "warning",
                           f"trainer and engine disagree: mean |Δ log-prob| {m.logprob_diff_mean:.3f} on the sampled tokens, "
                           f"{m.logprob_diff_mean / max(lp_base, 1e-9):.1f}× the recent median {lp_base:.3f}",
                           "logprob_diff_mean", m.logprob_diff_mean, r.factor * lp_base,
                           "resync weights (w) and check the canary; a dtype or kernel change on either side shows here",
                           r.action))
    r = cfg.slow_step
    med = _median(h.times.total for h in window)
    if r.enabled and med and len(window) >= cfg.window and m.times.total >= r.factor * med:
        out.append(Finding("slow_step", "warning",
                           f"step took {m.times.total:.2f} s, {m.times.total / med:.1f}× the recent median {med:.2f} s",
                           "step_time", m.times.total, r.factor * med,
                           "check the step split (generate/score/train/sync) and the reward functions", r.action))
    return out


CLEAR_AFTER = 3  # consecutive steps without the condition before a lasting alert is cleared


class AlertMonitor:
    """Stateful wrapper: keeps the window and the active conditions, emits raised and cleared
    Alerts, requests actions."""

    def __init__(self, cfg, emit: Callable[[Any], Any], request_pause: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.emit = emit
        self.request_pause = request_pause
        self.history: deque[StepMetrics] = deque(maxlen=max(cfg.window, 1) * 4)
        self.active: dict[str, tuple[int, Finding]] = {}  # rule -> (raised at step, its finding)
        self._absent: dict[str, int] = {}  # rule -> consecutive steps its condition did not hold

    def on_metrics(self, m: StepMetrics) -> list[Finding]:
        findings = check(self.cfg, m, list(self.history))
        self.history.append(m)
        fired = []
        now = {f.rule: f for f in findings}
        for rule, f in now.items():
            self._absent.pop(rule, None)
            if rule in self.active:
                continue
            self.active[rule] = (m.step, f)
            fired.append(f)
            self.raise_alert(f, m.step, lasting=True)
        for rule in [r for r in self.active if r not in now]:
            self._absent[rule] = self._absent.get(rule, 0) + 1
            if self._absent[rule] >= CLEAR_AFTER:
                since, f = self.active.pop(rule)
                del self._absent[rule]
                self.emit(Alert(rule=rule, severity=f.severity, state="cleared", lasting=True, since=since, step=m.step,
                                metric=f.metric, threshold=f.threshold,
                                message=f"{rule} cleared: not seen for {CLEAR_AFTER} steps (raised at step {since})"))
        return fired

    def raise_alert(self, f: Finding, step: int, *, lasting: bool = False) -> None:
        self.emit(Alert(rule=f.rule, severity=f.severity, message=f.message, step=step, metric=f.metric,
                        value=f.value if f.value is None or math.isfinite(f.value) else None,
                        threshold=f.threshold, suggestion=f.suggestion, lasting=lasting, since=step if lasting else None))
        if f.action == "pause":
            self.request_pause(f"alert {f.rule}: {f.message}")
