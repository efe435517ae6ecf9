"""Per-prompt learning curves: each prompt's reward history across the steps it was sampled in.

Pure Python (no Textual import); `RunState` feeds every `SampleGroup` to `PromptTracker.add`.
A prompt is identified by its text (the same text is the same prompt). Memory is bounded: per
prompt a summary (counts, first / best / lowest / newest mean) plus its newest `MAX_POINTS`
(step, group, mean, std) points; at most `MAX_PROMPTS` prompts (the least recently sampled
one is dropped first). The groups themselves stay in `RunState.groups` (the newest 500).

Status, judged against the run's reward range [lo, hi]: the total reward's natural bounds when
every reward function declares its range (`reward_range`, sent in `RunStarted`), else the
lowest and highest completion reward seen in any group so far; `span = hi - lo`:

* **always solved**: every group of the prompt had reward std 0 and its mean within
  `EDGE * span` of `hi` (no learning signal: every completion already gets the top reward);
* **never solved**: every group had std 0 and its mean within `EDGE * span` of `lo` (no
  learning signal: no completion ever gets more than the bottom reward);
* **regressed**: the newest mean is at least `MOVE * span` below the best earlier mean;
* **learning**: the newest mean is at least `MOVE * span` above the first mean (and not regressed);
* **mixed**: anything else (a learning signal, no clear trend yet).

When every reward seen so far is the same (`span` = 0, e.g. a constant reward), the zero-std
prompts are "always solved" when that value is > 0 and "never solved" otherwise.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from backend.protocol.events import SampleGroup

STATUSES: tuple[str, ...] = ("always solved", "never solved", "learning", "regressed", "mixed")
#: the prompts view's filter, in the order its key cycles: (name, statuses shown; None = all)
FILTERS: tuple[tuple[str, frozenset[str] | None], ...] = (
    ("all", None),
    ("no signal", frozenset({"always solved", "never solved"})),
    *((s, frozenset({s})) for s in STATUSES),
)
EDGE = 0.1  # share of the reward range counted as "at the top" / "at the bottom"
MOVE = 0.25  # share of the reward range a mean must move to count as learning / regressed
ZERO_STD = 1e-12
MAX_PROMPTS = 2000
MAX_POINTS = 64


class Point(NamedTuple):
    step: int
    group: int
    mean: float
    std: float
    weight_version: int


@dataclass
class PromptHistory:
    prompt: str
    groups: int = 0  # groups sampled (all of them, also those past the points ring)
    zero_std: int = 0  # of those, with reward std 0
    first_mean: float = 0.0
    best_mean: float = float("-inf")  # the highest mean before the newest group
    low_mean: float = float("inf")  # lowest / highest mean over every group
    high_mean: float = float("-inf")
    last_mean: float = 0.0
    first_step: int = 0
    last_step: int = 0
    points: deque[Point] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))

    def add(self, group: SampleGroup) -> None:
        mean, std = group.reward_mean, group.reward_std
        if self.groups == 0:
            self.first_mean, self.first_step = mean, group.step
        else:
            self.best_mean = max(self.best_mean, self.last_mean)
        self.groups += 1
        self.zero_std += abs(std) < ZERO_STD
        self.low_mean, self.high_mean = min(self.low_mean, mean), max(self.high_mean, mean)
        self.last_mean, self.last_step = mean, group.step
        self.points.append(Point(group.step, group.group, mean, std, group.weight_version))

    @property
    def means(self) -> list[float]:
        return [p.mean for p in self.points]


def classify(h: PromptHistory, lo: float, hi: float) -> str:
    """The prompt's status given the run's reward range (see the module docstring)."""
    span = hi - lo
    if h.groups and h.zero_std == h.groups:
        if span <= ZERO_STD:
            return "always solved" if hi > 0 else "never solved"
        if h.low_mean >= hi - EDGE * span:
            return "always solved"
        if h.high_mean <= lo + EDGE * span:
            return "never solved"
    if h.groups < 2 or span <= ZERO_STD:
        return "mixed"
    if h.best_mean - h.last_mean >= MOVE * span:
        return "regressed"
    if h.last_mean - h.first_mean >= MOVE * span:
        return "learning"
    return "mixed"


class PromptTracker:
    """Every prompt seen, with its history; bounded (see the module docstring)."""

    def __init__(self, max_prompts: int = MAX_PROMPTS) -> None:
        self.max_prompts = max_prompts
        self.histories: OrderedDict[str, PromptHistory] = OrderedDict()  # least recently sampled first
        self.lo = float("inf")  # the run's reward range: lowest / highest completion reward seen
        self.hi = float("-inf")
        self.bounds: tuple[float, float] | None = None  # the declared natural bounds, when known: they win over the seen range
        self.dropped = 0  # prompts forgotten to stay under max_prompts

    def __len__(self) -> int:
        return len(self.histories)

    def add(self, group: SampleGroup) -> None:
        for c in group.completions:
            self.lo, self.hi = min(self.lo, c.reward), max(self.hi, c.reward)
        if not group.completions:  # (a group always has completions; its mean still counts)
            self.lo, self.hi = min(self.lo, group.reward_mean), max(self.hi, group.reward_mean)
        h = self.histories.get(group.prompt)
        if h is None:
            h = self.histories[group.prompt] = PromptHistory(group.prompt)
            if len(self.histories) > self.max_prompts:
                self.histories.popitem(last=False)
                self.dropped += 1
        else:
            self.histories.move_to_end(group.prompt)
        h.add(group)

    @property
    def reward_range(self) -> tuple[float, float] | None:
        if self.bounds is not None:
            return self.bounds
        return None if self.lo > self.hi else (self.lo, self.hi)

    def status(self, prompt: str) -> str | None:
        h = self.histories.get(prompt)
        rng = self.reward_range
        return None if h is None or rng is None else classify(h, *rng)

    def rows(self, statuses: frozenset[str] | None = None) -> list[tuple[str, PromptHistory]]:
        """(status, history) of every prompt (in `statuses` if given): grouped in STATUSES order,
        the most recently sampled first within each status."""
        rng = self.reward_range
        if rng is None:
            return []
        out = []
        for h in reversed(self.histories.values()):
            s = classify(h, *rng)
            if statuses is None or s in statuses:
                out.append((s, h))
        order = {s: i for i, s in enumerate(STATUSES)}
        out.sort(key=lambda row: order[row[0]])  # stable: recency kept inside a status
        return out

    def counts(self) -> dict[str, int]:
        rng = self.reward_range
        out = dict.fromkeys(STATUSES, 0)
        if rng is not None:
            for h in self.histories.values():
                out[classify(h, *rng)] += 1
        return out

    def drop_after(self, step: int) -> None:
        """A resumed run replaces the steps after `step`: forget what they added (summaries are
        recomputed from the points still held)."""
        old, self.histories = self.histories, OrderedDict()
        for prompt, h in old.items():
            points = [p for p in h.points if p.step <= step]
            if len(points) == len(h.points):
                self.histories[prompt] = h
                continue
            if not points:
                continue
            fresh = PromptHistory(prompt)
            for p in points:
                fresh.add(SampleGroup(step=p.step, group=p.group, prompt=prompt, completions=[], weight_version=p.weight_version,
                                      reward_mean=p.mean, reward_std=p.std))
            self.histories[prompt] = fresh
