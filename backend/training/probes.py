"""Asking the live engine outside the training batch: the policy probes and the playground.

Both sample the engine at the current weights between two steps (the step loop calls them at
a boundary), score the outputs with the run's own reward functions where the dataset columns
they need are known, and report what came back as events: `PolicyProbe` (fixed prompts,
greedy, every `telemetry.probe_every` steps: what the policy says now, in words, and the
human-readable proof that the engine serves the new weights) and `TryResult` (an operator's
prompt, `rl-console ctl RUN try`).
"""

from __future__ import annotations

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
          weights: list[float], why: dict[str, str] | None = None) -> list[list[tuple[dict[str, float | None], float | None]]]:
    """Per row, per completion: ({function: reward}, weighted total). Each reward function gets
    what TRL would give it: prompts, completions (chat messages for a conversational prompt) and
    the row's columns, each repeated per completion. A function that fails (or needs a column
    this row does not have) gives None for that function, not an error; `why`, when given, is
    filled with the reason per function that gave nothing."""
    prompts, completions, ids, cols = [], [], [], {}
    keys = set().union(*(r.columns.keys() for r in rows)) if rows else set()
    for row, group in zip(rows, groups, strict=True):
        for c in group:
            prompts.append(row.prompt)
            completions.append([{"role": "assistant", "content": c.text}] if isinstance(row.prompt, list) else c.text)
            ids.append(list(c.token_ids))
            for k in keys:
                cols.setdefault(k, []).append(row.columns.get(k))
    values: dict[str, list[Any]] = {}
    for name, func in zip(names, reward_funcs, strict=True):
        try:
            out = func(prompts=prompts, completions=completions, completion_ids=ids, **cols)
        except Exception as exc:  # noqa: BLE001 - a probe is not worth a failure; the step's own scoring reports it
            out = None
            if why is not None:
                why[name] = f"raised {type(exc).__name__}: {str(exc)[:300]}"
        ok = out is not None and hasattr(out, "__len__") and len(out) == len(prompts)
        if not ok and why is not None and name not in why:
            why[name] = "returned no list of rewards" if out is None else f"returned {type(out).__name__}, not one reward per completion"
        values[name] = [clean(v) if ok else None for v in (out if ok else prompts)]
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
    scored = score(rows, groups, task.reward_funcs, task.reward_names, task.reward_weights)
    return E.PolicyProbe(
        step=step,
        weight_version=weight_version,
        probes=[
            E.ProbeOutput(prompt=prompt_text(row.prompt), output=g[0].text, rewards=s[0][0], reward=s[0][1],
                          length=len(g[0].token_ids), truncated=g[0].truncated)
            for row, g, s in zip(rows, groups, scored, strict=True)
        ],
        duration_s=time.perf_counter() - t0,
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
    scored = score([row], groups, task.reward_funcs, task.reward_names, task.reward_weights, why)[0]
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
    return {name: reason + hint for name, reason in why.items()}


def dataset_columns(dataset: Any) -> list[str]:
    """The columns TRL hands the reward functions besides the prompt."""
    names = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    return [c for c in names if c != "prompt"]
