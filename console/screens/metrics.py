"""Metrics: small multiples of what operators read beside the reward (loss, KL, entropy,
lengths, no-signal and truncation shares, trainer–engine agreement, speed), with the step
count, the run's length and an ETA in the title."""

from __future__ import annotations

import statistics

from textual.app import ComposeResult
from textual.binding import Binding

from console.screens.base import LiveScreen
from console.state import RunState, window_span, window_start
from console.widgets.metrics_grid import MetricsGrid, Series


def windowed_steps(state: RunState, window: int | None = None) -> list:
    """The held StepMetrics in the charts' window (the last `window` steps; None: all)."""
    steps = list(state.steps)
    first = window_start([m.step for m in steps[-1:]], window)
    return steps if first is None else [m for m in steps if m.step >= first]


def metric_series(state: RunState, window: int | None = None) -> list[Series]:
    steps = windowed_steps(state, window)

    def col(get) -> list[float]:
        out = []
        for m in steps:
            v = get(m)
            if v is not None:
                out.append(float(v))
        return out

    series = [Series("reward", col(lambda m: m.reward_mean), "{:.3f}", "green")]
    for name in state.reward_functions:
        series.append(Series(f"· {name}"[:14], col(lambda m, n=name: m.rewards_by_function.get(n)), "{:.3f}", "green"))
    series += [
        Series("loss", col(lambda m: m.loss), "{:+.4f}", "yellow"),
        Series("kl", col(lambda m: m.kl), "{:.4f}", "yellow", "logged when training.beta > 0"),
        Series("entropy", col(lambda m: m.entropy), "{:.3f}", "magenta"),
        Series("length", col(lambda m: m.completion_length_mean), "{:.1f}", "cyan"),
        Series("zero-std", col(lambda m: m.frac_reward_zero_std * 100), "{:.0f}%", "red"),
        Series("truncated", col(lambda m: m.truncated_ratio * 100), "{:.0f}%", "red"),
    ]
    # after the essentials (80x24 shows those first): one function taking over the total is a
    # reward-hacking sign
    if len(state.reward_functions) > 1:
        for name in state.reward_functions:
            series.append(Series(f"% {name}"[:14], col(lambda m, n=name: reward_share(state, m, n)), "{:.0f}%", "dark_orange"))
    series += signal_series(state, window)
    series += [
        Series("Δlogp", col(lambda m: m.logprob_diff_mean), "{:.3g}", "orchid", "measured every telemetry.logprob_diff_every steps"),
        Series("grad norm", col(lambda m: m.grad_norm), "{:.3g}", "yellow"),
        Series("step s", col(lambda m: m.times.total), "{:.2f}", "dodger_blue1"),
        Series("tokens/s", col(lambda m: m.tokens_per_s), "{:,.0f}", "dodger_blue1"),
    ]
    return series


#: the in-group diversity and reward-hacking signals (StepMetrics; backend/training/report.py)
SIGNALS = (
    ("distinct", "distinct_ratio", 100.0, "{:.0f}%", "distinct completions per group (falls as the policy collapses)"),
    ("overlap", "group_overlap", 1.0, "{:.2f}", "mean pairwise 3-gram overlap within groups (rises as it collapses)"),
    ("repetition", "repetition", 100.0, "{:.0f}%", "repeated 3-grams inside completions"),
    ("len↔reward", "reward_length_corr", 1.0, "{:+.2f}", "correlation of reward with length (a length hack: near +1)"),
    ("ground truth", "ground_truth_mean", 1.0, "{:.3f}", "task.ground_truth's mean (flat while the reward rises: a hack)"),
)


def signal_series(state: RunState, window: int | None = None) -> list[Series]:
    """distinct %, overlap, repetition %, length↔reward correlation, and the ground truth's mean
    (only when the run has one), each with its trend."""
    steps = windowed_steps(state, window)
    out = []
    for label, field, scale, fmt, _ in SIGNALS:
        values = [float(v) * scale for m in steps if (v := getattr(m, field, None)) is not None]
        if field == "ground_truth_mean" and not values:
            continue  # the run names no task.ground_truth
        out.append(Series(label, values, fmt, "bright_magenta", "not computed yet (an older backend?)", trend=True))
    return out


def reward_share(state: RunState, m, name: str) -> float | None:
    """Percent of a step's total (weighted) reward that function `name` contributed."""
    weights = state.reward_weights or {}
    parts = {n: weights.get(n, 1.0) * v for n, v in m.rewards_by_function.items()}
    total = sum(abs(v) for v in parts.values())
    if name not in parts or total <= 0:
        return None
    return 100.0 * abs(parts[name]) / total


def progress_heading(state: RunState) -> str:
    """'step 120/300 · ETA 4m10s' (the ETA from the median of the last 20 step times)."""
    total = state.max_steps
    if not total:
        return f"step {state.step}"
    text = f"step {state.step}/{total}"
    recent = [m.times.total for m in list(state.steps)[-20:] if m.times.total > 0]
    left = total - state.step
    if state.state == "paused" and left > 0:
        text += " · paused"  # no ETA while nothing moves
    elif recent and left > 0 and state.state in ("running", "pausing"):
        secs = int(statistics.median(recent) * left)
        text += f" · ETA {secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f" · ETA {secs // 60}m{secs % 60:02d}s"
    return text


class MetricsScreen(LiveScreen):
    SCREEN_NAME = "metrics"
    BINDINGS = [Binding("i", "toggle_signals", "signals", tooltip="signals page: in-group diversity (distinct, overlap, "
                        "repetition) and reward-hacking signs (length correlation, reward shares, ground truth)"),
                Binding("z", "zoom", "zoom", show=False, tooltip="charts (here and on the dashboard): the whole run, "
                        "the last 200 steps, the last 50 steps")]

    def __init__(self) -> None:
        super().__init__()
        self.signals = False  # the signals page instead of every metric

    def compose_body(self) -> ComposeResult:
        yield MetricsGrid(id="metrics-grid")

    def action_toggle_signals(self) -> None:
        self.signals = not self.signals
        self.console_app.repaint(force=True)

    def action_zoom(self) -> None:
        self.console_app.cycle_chart_window()

    def refresh_view(self, state: RunState) -> None:
        super().refresh_view(state)
        window = self.console_app.chart_window
        shown = len(windowed_steps(state, window))
        span = window_span(window, shown, len(state.steps), state.steps.maxlen) + " (z)"
        if self.signals:
            series = metric_series(state, window)
            keep = [s for s in series if s.name in ("reward", "zero-std") or s.name.startswith("% ")]
            self.query_one(MetricsGrid).show([*keep[:2], *signal_series(state, window), *keep[2:]],
                                             f"signals (i: all) · {progress_heading(state)} · {span}")
        else:
            self.query_one(MetricsGrid).show(metric_series(state, window), f"{progress_heading(state)} · {span}")
