"""Console test kit: a scripted event source, a realistic run generator, and small helpers.

Everything is reached through fixtures (this folder has no __init__.py on purpose: a
`tests/console` package would shadow the real `console` package).
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import pytest
from rich.console import Console

from backend.protocol import PROTOCOL_VERSION
from backend.protocol.events import (
    Alert,
    CommandResult,
    Completion,
    GpuStats,
    Hello,
    ParamsApplied,
    Progress,
    RunStarted,
    SampleGroup,
    StateChanged,
    StepMetrics,
    StepTimes,
    WeightsSynced,
)

TS0 = 1_700_000_000.0
RUN_ID = "20240501-120000-demo"
FUNCS = ("char_match", "first_char")
PARAMS = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 64, "num_generations": 8, "learning_rate": 1e-5, "beta": 0.04}
WORDS = ("apple", "river", "stone", "cloud", "maple", "tiger", "piano", "lemon", "orbit", "quilt")


class ScriptedSource:
    """A fake backend: yields a scripted list of real protocol events, records commands.

    `delay` paces the script; `hold_open` keeps the stream open after the script (a live
    backend) instead of ending it (backend gone). `respond(command)` returns the events
    to answer a command with (default: one accepted CommandResult).
    """

    def __init__(
        self,
        events: Iterable[Any] = (),
        *,
        delay: float = 0.0,
        hold_open: bool = True,
        respond: Callable[[Any], list[Any]] | None = None,
        run_id: str = RUN_ID,
        connect_error: Exception | None = None,
    ) -> None:
        self.script = events
        self.delay = delay
        self.hold_open = hold_open
        self.respond = respond if respond is not None else self.accept
        self.run_id = run_id
        self.connect_error = connect_error
        self.sent: list[Any] = []
        self.delivered = 0
        self.exhausted = False
        self.closed = False
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    @staticmethod
    def accept(command: Any) -> list[Any]:
        return [CommandResult(command_id=command.id, command=command.kind, status="accepted", ts=TS0 + 1000)]

    def push(self, *events: Any) -> None:
        """Inject events into the live stream (after or during the script)."""
        for event in events:
            self._queue.put_nowait(event)

    async def connect(self) -> Hello:
        if self.connect_error is not None:
            raise self.connect_error
        # the script is the run's history: the hello says where it ends (pushed events are live)
        # (a generated flood is all history too; it is not read ahead to find its end)
        last = (max((getattr(e, "seq", -1) for e in self.script), default=-1)
                if isinstance(self.script, (list, tuple)) else 10**12)
        return Hello(protocol=PROTOCOL_VERSION, run_id=self.run_id, ts=TS0, last_seq=last)

    async def events(self) -> AsyncIterator[Any]:
        for event in self.script:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    return
                yield item
            if self.delay:
                await asyncio.sleep(self.delay)
            yield event
            self.delivered += 1
        self.exhausted = True
        while self.hold_open or not self._queue.empty():
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def send(self, command: Any) -> None:
        if self.closed:
            raise ConnectionError("source closed")
        self.sent.append(command)
        self.push(*self.respond(command))

    async def close(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)


# -- a realistic run ------------------------------------------------------------------------

def make_group(step: int, group: int, *, g: int = 8, ts: float = TS0, weight_version: int = 0) -> SampleGroup:
    rng = random.Random(step * 1000 + group)
    word = WORDS[(step * 3 + group) % len(WORDS)]
    target = word[::-1]
    prompt = f"Reverse the word '{word}'. Answer with the reversed word only."
    texts = []
    if group == 3 and step % 2 == 0:  # a group with no learning signal: all completions the same
        texts = [target] * g
    else:
        for _ in range(g):
            kind = rng.random()
            if kind < 0.35:
                texts.append(target)
            elif kind < 0.8:
                chars = list(target)
                rng.shuffle(chars)
                texts.append("".join(chars))
            else:
                texts.append(f"Let me think about '{word}' step by step. The letters are " + ", ".join(word) * 3)
    rewards = []
    for text in texts:
        match = sum(a == b for a, b in zip(text, target, strict=False)) / len(target)
        first = 1.0 if text[:1] == target[:1] else 0.0
        rewards.append({"char_match": round(match, 3), "first_char": first})
    totals = [r["char_match"] + r["first_char"] for r in rewards]
    mean = sum(totals) / g
    std = (sum((t - mean) ** 2 for t in totals) / g) ** 0.5
    completions = [
        Completion(
            text=text,
            rewards=r,
            reward=round(total, 4),
            advantage=round((total - mean) / (std + 1e-4), 4) if std > 0 else 0.0,
            length=64 if len(text) > 30 else len(text) + 1,
            truncated=len(text) > 30,
        )
        for text, r, total in zip(texts, rewards, totals, strict=True)
    ]
    return SampleGroup(
        ts=ts, step=step, group=group, prompt=prompt, completions=completions,
        weight_version=weight_version, reward_mean=round(mean, 4), reward_std=round(std, 4),
    )


def make_run(steps: int = 12, groups: int = 4, g: int = 8, *, alert_at: int | None = 6, params_at: int | None = 5,
             reward_ranges: list | None = None) -> list[Any]:
    """RunStarted, Progress, running, then per step: groups, StepMetrics, WeightsSynced.
    `reward_ranges`: what each reward function declares (RunStarted.reward_ranges; none by default)."""
    events: list[Any] = [
        RunStarted(ts=TS0, run_id=RUN_ID, profile="default", model="tiny-gpt2-reverse", task="reverse-word",
                   engine="vllm-cpu", reward_functions=list(FUNCS), params=dict(PARAMS), pid=4242,
                   reward_ranges=list(reward_ranges or [])),
        Progress(ts=TS0 + 1, stage="engine", message="building tiny model", current=1, total=3),
        Progress(ts=TS0 + 4, stage="engine", message="starting vLLM engine (cpu)", current=2, total=3),
        Progress(ts=TS0 + 9, stage="engine", message="warm-up generate", current=3, total=3),
        StateChanged(ts=TS0 + 10, state="running", reason="engine ready"),
        GpuStats(ts=TS0 + 10, available=False, reason="no NVIDIA GPU"),
    ]
    for step in range(1, steps + 1):
        ts = TS0 + 10 + step * 2.5
        batch = [make_group(step, k, g=g, ts=ts, weight_version=step - 1) for k in range(groups)]
        events.extend(batch)
        means = [b.reward_mean for b in batch]
        by_fn = {f: sum(c.rewards[f] or 0.0 for b in batch for c in b.completions) / (groups * g) for f in FUNCS}
        zero = sum(1 for b in batch if b.reward_std == 0) / groups
        trunc = sum(c.truncated for b in batch for c in b.completions) / (groups * g)
        gen, score, train, sync = 1.2 + 0.05 * step, 0.08, 0.7, 0.12
        events.append(StepMetrics(
            ts=ts + 0.1, step=step, loss=0.02 / step, kl=0.001 * step, grad_norm=0.5, learning_rate=1e-5,
            reward_mean=round(sum(means) / groups, 4), reward_std=round(0.3 + 0.02 * (step % 3), 4),
            rewards_by_function=by_fn, frac_reward_zero_std=zero, truncated_ratio=trunc,
            completion_length_mean=9.5, times=StepTimes(generate=gen, score=score, train=train, sync=sync, total=gen + score + train + sync),
            tokens_per_s=812.0 + step, samples_per_s=14.2, weight_version=step,
        ))
        events.append(WeightsSynced(ts=ts + 0.2, version=step, step=step, duration_s=0.12, bytes=12_400_000,
                                    checksum=f"sha256:{step:04d}abcdef", verified=True, method="load_weights"))
        if params_at == step:
            events.append(ParamsApplied(ts=ts + 0.3, command_id="other-console", step=step,
                                        changed={"temperature": 0.9}, params={**PARAMS, "temperature": 0.9}))
        if alert_at == step:
            events.append(Alert(ts=ts + 0.3, rule="zero_std_groups", severity="warning", step=step,
                                message="25% of groups have zero reward std (no learning signal)",
                                metric="frac_reward_zero_std", value=0.25, threshold=0.2,
                                suggestion="raise temperature or num_generations"))
    for i, event in enumerate(events):
        events[i] = event.model_copy(update={"seq": i})
    return events


def flood(n: int) -> Iterator[Any]:
    """A one-step run, then `n` sample groups (8 per step) as fast as the reader takes them."""
    templates = [make_group(1, k, ts=TS0) for k in range(8)]
    yield from make_run(steps=1)
    for i in range(n):
        yield templates[i % 8].model_copy(update={"step": 2 + i // 8, "group": i % 8, "seq": 100 + i, "ts": TS0 + 20 + i * 0.01})


def starting_run() -> list[Any]:
    return [
        RunStarted(seq=0, ts=TS0, run_id=RUN_ID, profile="default", model="tiny-gpt2-reverse", task="reverse-word",
                   engine="vllm-cpu", reward_functions=list(FUNCS), params=dict(PARAMS)),
        StateChanged(seq=1, ts=TS0 + 0.5, state="starting", reason="launching engine"),
        Progress(seq=2, ts=TS0 + 3, stage="engine", message="starting vLLM engine (cpu)", current=2, total=5),
    ]


# -- helpers --------------------------------------------------------------------------------

def screen_text(app: Any) -> str:
    """The plain text of what the terminal shows now."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                      legacy_windows=False, color_system=None)
    from console.textual_compat import full_frame

    console.print(full_frame(app))
    return console.export_text()


async def wait_for(pilot: Any, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def settle(pilot: Any, source: ScriptedSource | None = None) -> None:
    """Wait until the script is consumed, then repaint and let the screen render."""
    app = pilot.app
    if source is not None:
        await wait_for(pilot, lambda: source.exhausted and source._queue.empty(), what="script consumed")
    await pilot.pause()
    app.repaint(force=True)
    await pilot.pause()


class Kit:
    Source = ScriptedSource
    make_run = staticmethod(make_run)
    make_group = staticmethod(make_group)
    flood = staticmethod(flood)
    starting_run = staticmethod(starting_run)
    screen_text = staticmethod(screen_text)
    wait_for = staticmethod(wait_for)
    settle = staticmethod(settle)
    TS0 = TS0
    RUN_ID = RUN_ID
    FUNCS = FUNCS
    PARAMS = PARAMS


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(autouse=True)
def _automatic_gc_restored():
    """Each console test starts with automatic GC on, as a fresh console process does. An app
    holds GC off from a key's arrival to its frame and gives it back at unmount; a key that
    lands after unmount in a test can leave it off for the next test in this process."""
    import gc

    gc.enable()
    yield
    gc.enable()
