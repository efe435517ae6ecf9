"""Asking the live engine outside the training batch: the policy probes and the playground.

Both sample the engine at the current weights between two steps (the step loop calls them at
a boundary), score the outputs with the run's own reward functions where the dataset columns
they need are known, and report what came back as events: `PolicyProbe` (fixed prompts,
greedy, every `telemetry.probe_every` steps: what the policy says now, in words, and the
human-readable proof that the engine serves the new weights) and `TryResult` (an operator's
prompt, `rl-console ctl RUN try`).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from backend.engine.base import GeneratedCompletion, Sampling
from backend.protocol import events as E
from backend.training.data import prompt_text
from backend.training.report import clean


@dataclass(frozen=True)
class Row:
    """A prompt as the task has it (text or chat messages) and the other dataset columns of its row."""

    prompt: Any
    columns: dict[str, Any] = field(default_factory=dict)


def probe_rows(dataset: Any, count: int, prompts: list[str]) -> list[Row]:
    """The fixed probe set: the profile's own prompts if listed, else `count` rows spread
    evenly over the dataset (first distinct prompts at even spacing), with their columns."""
    if prompts:
        return [Row(p) for p in prompts]
    n = len(dataset)
    if n == 0 or count <= 0:
        return []
    picked: list[Row] = []
    seen: set[str] = set()
    for k in range(count):
        row = dataset[(k * n) // count]
        key = prompt_text(row["prompt"])
        if key in seen:
            continue
        seen.add(key)
        picked.append(Row(row["prompt"], {c: v for c, v in row.items() if c != "prompt"}))
    return picked


def score(rows: list[Row], groups: list[list[GeneratedCompletion]], reward_funcs: list[Any], names: list[str],
          weights: list[float], why: dict[str, str] | None = None,
          timeout_s: float | None = None) -> list[list[tuple[dict[str, float | None], float | None]]]:
    """Per row, per completion: ({function: reward}, weighted total). Each reward function gets
    what TRL would give it: prompts, completions (chat messages for a conversational prompt) and
    the row's columns, each repeated per completion. A function that fails (raises, returns no
    list of numbers, or takes longer than `timeout_s`) gives None, not an error; one that raised
    on the whole batch is asked again row by row, so one row it cannot score does not cost the
    others their rewards. `why`, when given, is filled with the reason per function that gave
    nothing for some row.

    The functions are called outside the training step's recorder (the step's own rewards
    and failures stay the step's): their unwrapped originals, under a recorder of their own."""
    from backend.training.rewards import RewardRecorder

    prompts, completions, ids, cols, row_of = [], [], [], {}, []
    keys = set().union(*(r.columns.keys() for r in rows)) if rows else set()
    for r_i, (row, group) in enumerate(zip(rows, groups, strict=True)):
        for c in group:
            prompts.append(row.prompt)
            completions.append([{"role": "assistant", "content": c.text}] if isinstance(row.prompt, list) else c.text)
            ids.append(list(c.token_ids))
            row_of.append(r_i)
            for k in keys:
                cols.setdefault(k, []).append(row.columns.get(k))
    recorder = RewardRecorder(timeout_s=timeout_s)

    def call(name: str, func: Any, picked: list[int]) -> tuple[list[float | None], str]:
        """(values, why none) of `func` on the completions `picked`."""
        recorder.reset()
        out = func(prompts=[prompts[i] for i in picked], completions=[completions[i] for i in picked],
                   completion_ids=[ids[i] for i in picked], **{k: [v[i] for i in picked] for k, v in cols.items()})
        if inspect.isawaitable(out):  # an async reward function (its wrapper keeps the timeout)
            out = asyncio.run(out)
        failed = recorder.failures.get(name, "")
        return [None if failed else clean(v) for v in out], failed

    values: dict[str, list[Any]] = {}
    everything = list(range(len(prompts)))
    for name, func in zip(names, reward_funcs, strict=True):
        wrapped = recorder.wrap(getattr(func, "__wrapped__", func))
        wrapped_name = wrapped.__name__
        vals, failed = call(wrapped_name, wrapped, everything)
        if failed.startswith("raised") and len(rows) > 1:  # salvage the rows it can score
            vals, reasons = [None] * len(prompts), []
            for r_i in range(len(rows)):
                picked = [i for i in everything if row_of[i] == r_i]
                got, row_failed = call(wrapped_name, wrapped, picked)
                for i, v in zip(picked, got):
                    vals[i] = v
                if row_failed:
                    reasons.append(row_failed)
            failed = f"{reasons[0]} (on {len(reasons)} of {len(rows)} prompts)" if reasons else ""
        if failed and why is not None:
            why[name] = failed
        values[name] = vals
    result, i = [], 0
    for group in groups:
        per = []
        for _ in group:
            r = {name: values[name][i] for name in names}
            parts = [w * v for w, v in zip(weights, r.values()) if v is not None]
            total = sum(parts) if parts else None
            per.append((r, total if total is None or math.isfinite(total) else None))
            i += 1
        result.append(per)
    return result


def run_probe(session: Any, rows: list[Row], max_tokens: int, *, step: int, weight_version: int) -> E.PolicyProbe:
    """Greedy outputs of the probe rows at the engine's current weights, scored."""
    import time

    t0 = time.perf_counter()
    groups = session.engine.generate([session.encode(r.prompt) for r in rows],
                                     Sampling(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=max_tokens, seed=0,
                                              logprobs=False))
    task = session.task
    unscored: dict[str, str] = {}
    scored = score(rows, groups, task.reward_funcs, task.reward_names, task.reward_weights, unscored,
                   timeout_s=session.recorder.timeout_s)
    return E.PolicyProbe(
        step=step,
        weight_version=weight_version,
        probes=[
            E.ProbeOutput(prompt=prompt_text(row.prompt), output=g[0].text, rewards=s[0][0], reward=s[0][1],
                          length=len(g[0].token_ids), truncated=g[0].truncated)
            for row, g, s in zip(rows, groups, scored, strict=True)
        ],
        duration_s=time.perf_counter() - t0,
        unscored=unscored,
    )


def run_try(session: Any, prompt: str, sampling: Sampling, columns: dict[str, Any], *,
            conversational: bool) -> tuple[list[E.Completion], dict[str, str]]:
    """An operator's prompt (as a user message when the task is conversational) sampled `n`
    times with `sampling`, scored where the reward functions find what they need; and why each
    function that gave no reward gave none (with the dataset columns the request left out)."""
    row = Row([{"role": "user", "content": prompt}] if conversational else prompt, dict(columns))
    groups = session.engine.generate([session.encode(row.prompt)], sampling)
    task = session.task
    why: dict[str, str] = {}
    scored = score([row], groups, task.reward_funcs, task.reward_names, task.reward_weights, why,
                   timeout_s=session.recorder.timeout_s)[0]
    completions = [
        E.Completion(text=c.text, rewards=r, reward=total if total is not None else 0.0, advantage=0.0,
                     length=len(c.token_ids), truncated=c.truncated)
        for c, (r, total) in zip(groups[0], scored, strict=True)
    ]
    return completions, with_column_hint(why, dataset_columns(task.dataset), columns)


def with_column_hint(why: dict[str, str], known: list[str], given: dict[str, Any]) -> dict[str, str]:
    """Reasons a try went unscored, with the dataset columns the request left out (the usual
    cause: a reward function reads a column, e.g. the answer, that only the dataset has)."""
    missing = [c for c in known if c not in given]
    if not why or not missing:
        return why
    hint = f"; the request gave no {', '.join(missing)} (add --column {missing[0]}=VALUE)"
    # only where the reason points at a column left out (a KeyError or missing argument naming it,
    # or no values at all): "returned 1 values for 2 completions" is the function's own bug
    return {name: reason + hint if reason.startswith("returned None") or any(repr(c) in reason or f" {c}" in reason
                                                                         for c in missing) else reason
            for name, reason in why.items()}


def dataset_columns(dataset: Any) -> list[str]:
    """The columns TRL hands the reward functions besides the prompt."""
    names = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    return [c for c in names if c != "prompt"]
