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
    evidence: str = ""  # the StepMetrics.evidence key whose groups show it


def _median(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def _held(values: list[float | None], n: int, ok: Callable[[float], bool]) -> bool:
    """The last `n` values all present and all satisfying `ok` (a condition over the whole window)."""
    tail = values[-n:]
    return len(tail) >= n and all(v is not None and math.isfinite(v) and ok(v) for v in tail)


def shares(m: StepMetrics, weights: dict[str, float]) -> dict[str, float]:
    """Each reward function's share of the weighted total |reward| of a step."""
    parts = {n: abs(weights.get(n, 1.0) * v) for n, v in m.rewards_by_function.items() if weights.get(n, 1.0)}
    total = sum(parts.values())
    return {n: v / total for n, v in parts.items()} if total > 0 and len(parts) > 1 else {}


def check(cfg, m: StepMetrics, history: list[StepMetrics], weights: dict[str, float] | None = None) -> list[Finding]:
    """Pure: the findings for metrics `m` given the earlier `history` (oldest first)."""
    out: list[Finding] = []
    seq = [*history[-(cfg.window - 1):], m] if cfg.window > 1 else [m]  # the window, ending with m
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
        compiling = m.times.compile >= 0.5 * m.times.total  # most of it torch.compile at work: say so
        out.append(Finding("slow_step", "warning",
                           f"step took {m.times.total:.2f} s, {m.times.total / med:.1f}× the recent median {med:.2f} s"
                           + (f", {m.times.compile:.2f} s of it compiling the update" if m.times.compile >= 0.01 else ""),
                           "step_time", m.times.total, r.factor * med,
                           "a compiled update compiles once for each new input variant (a batch without padding, a new "
                           "group size); steps after it run at the usual speed" if compiling else
                           "check the step split (generate/score/train/sync) and the reward functions", r.action))
    # -- what the batch says beyond its reward: early collapse and reward hacking
    n = cfg.window
    r = cfg.diversity_collapse
    if r.enabled and _held([h.unsolved_distinct_ratio for h in seq], n, lambda v: v <= r.threshold):
        out.append(Finding("diversity_collapse", "warning",
                           f"only {m.unsolved_distinct_ratio:.0%} of the completions in unsolved groups are distinct (for {n} "
                           "steps): the policy repeats itself before it found the answer", "unsolved_distinct_ratio",
                           m.unsolved_distinct_ratio, r.threshold,
                           "raise temperature; lower the learning rate; look at the groups", r.action, "diversity"))
    r = cfg.length_hacking
    lengths_grew = len(seq) >= n and seq[0].completion_length_mean > 0 and m.completion_length_mean >= 1.1 * seq[0].completion_length_mean
    if r.enabled and lengths_grew and _held([h.reward_length_corr for h in seq], n, lambda v: v >= r.threshold):
        out.append(Finding("length_hacking", "warning",
                           f"reward follows completion length (correlation {m.reward_length_corr:.2f} for {n} steps) while "
                           f"completions grew {m.completion_length_mean / seq[0].completion_length_mean - 1:+.0%}: "
                           "a reward function may pay for length", "reward_length_corr", m.reward_length_corr, r.threshold,
                           "open the evidence groups; penalise length or fix the reward", r.action, "length"))
    r = cfg.reward_dominance
    if r.enabled and weights:
        top = [max(sh.items(), key=lambda kv: kv[1]) if (sh := shares(h, weights)) else None for h in seq]
        name = top[-1][0] if top[-1] else None
        if name and _held([v if k == name else None for k, v in (t or ("", None) for t in top)], n, lambda v: v >= r.threshold):
            out.append(Finding("reward_dominance", "warning",
                               f"{name} makes {top[-1][1]:.0%} of the weighted reward (for {n} steps): the other functions barely count",
                               "reward_share", top[-1][1], r.threshold,
                               "check the reward weights; a function that dominates is the one being optimised", r.action))
    r = cfg.ground_truth_flat
    if r.enabled and len(seq) >= n and all(h.ground_truth_mean is not None for h in (seq[0], m)):
        rise = m.reward_mean - seq[0].reward_mean
        gt_rise = m.ground_truth_mean - seq[0].ground_truth_mean
        if rise >= r.drop and gt_rise < r.drop / 4:
            out.append(Finding("ground_truth_flat", "critical",
                               f"reward rose {rise:+.3f} over {n} steps while the ground truth moved {gt_rise:+.3f}: "
                               "the policy may be gaming the reward", "ground_truth_mean", m.ground_truth_mean, None,
                               "open the evidence groups (high reward, low ground truth); fix the reward", r.action,
                               "ground_truth"))
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
        self.weights: dict[str, float] = {}  # reward function -> weight (for reward_dominance)
        self.active: dict[str, tuple[int, Finding]] = {}  # rule -> (raised at step, its finding)
        self._absent: dict[str, int] = {}  # rule -> consecutive steps its condition did not hold

    def on_metrics(self, m: StepMetrics) -> list[Finding]:
        findings = check(self.cfg, m, list(self.history), self.weights)
        self.history.append(m)
        fired = []
        now = {f.rule: f for f in findings}
        for rule, f in now.items():
            self._absent.pop(rule, None)
            if rule in self.active:
                continue
            self.active[rule] = (m.step, f)
            fired.append(f)
            self.raise_alert(f, m.step, lasting=True, evidence=[[m.step, g] for g in m.evidence.get(f.evidence, [])])
        for rule in [r for r in self.active if r not in now]:
            self._absent[rule] = self._absent.get(rule, 0) + 1
            if self._absent[rule] >= CLEAR_AFTER:
                since, f = self.active.pop(rule)
                del self._absent[rule]
                self.emit(Alert(rule=rule, severity=f.severity, state="cleared", lasting=True, since=since, step=m.step,
                                metric=f.metric, threshold=f.threshold,
                                message=f"{rule} cleared: not seen for {CLEAR_AFTER} steps (raised at step {since})"))
        return fired

    def raise_alert(self, f: Finding, step: int, *, lasting: bool = False, evidence: list[list[int]] | None = None) -> None:
        self.emit(Alert(rule=f.rule, severity=f.severity, message=f.message, step=step, metric=f.metric,
                        value=f.value if f.value is None or math.isfinite(f.value) else None,
                        threshold=f.threshold, suggestion=f.suggestion, lasting=lasting, since=step if lasting else None,
                        evidence=evidence or []))
        if f.action == "pause":
            self.request_pause(f"alert {f.rule}: {f.message}")
