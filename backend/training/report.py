"""What a step reports: its sample groups and its metrics, built from the step's pieces.

A step's completions come from the engine (the `RolloutBatch`), their rewards from the
reward functions (recorded while TRL scores) and their advantages from TRL, at three
different moments. `join_scores` puts them together once, and checks that every piece
covers every completion of the batch in the same order, so a mismatch is an error naming
the piece, never a silently shifted reward.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, NamedTuple

from backend.protocol import events as E
from backend.training.data import prompt_text
from backend.training.trainer import RolloutBatch


class ScoreJoinError(RuntimeError):
    """The rewards or advantages of a step do not line up with its completions."""


class ScoredRow(NamedTuple):
    """One completion with its scores (a tuple: 128 of them are built per step on the training
    thread, ~4x faster than a frozen dataclass)."""

    group: int
    completion: Any  # GeneratedCompletion
    rewards: dict[str, float | None]
    total: float | None
    advantage: float | None


def join_scores(batch: RolloutBatch, rewards: dict[str, list[float | None]], advantages: list[float],
                names: list[str], weights: list[float]) -> list[list[ScoredRow]]:
    """Per group, its rows: completion i of the batch (groups in prompt order, completions in
    engine order, which is the order TRL receives and scores them) with reward i of every
    function and advantage i."""
    n = batch.num_completions
    if len(advantages) != n:
        raise ScoreJoinError(f"step {batch.step}: TRL returned {len(advantages)} advantages for {n} completions")
    for name in names:
        got = rewards.get(name)
        if got is None:
            raise ScoreJoinError(f"step {batch.step}: no rewards recorded for reward function {name}")
        if len(got) != n:
            raise ScoreJoinError(f"step {batch.step}: reward function {name} gave {len(got)} values for {n} completions")
    cleaned = [[clean(v) for v in rewards[name]] for name in names]
    weighted = list(zip(weights, (rewards[name] for name in names)))
    adv = [clean(a) for a in advantages]
    # per completion: its rewards by function, and the weighted total of the functions that gave one
    by_name = [dict(zip(names, vals)) for vals in zip(*cleaned)] if names else [{} for _ in range(n)]
    totals = [clean(sum(w * v for w, vals in weighted if (v := vals[i]) is not None)) for i in range(n)]
    out: list[list[ScoredRow]] = []
    i = 0
    for gi, group in enumerate(batch.groups):
        j = i + len(group)
        out.append([ScoredRow(gi, c, by_name[k], totals[k], adv[k]) for k, c in enumerate(group, i)])
        i = j
    return out


def _token_view(batch: RolloutBatch, r: ScoredRow, index: int, decode: Callable[[int], str] | None) -> dict[str, Any]:
    """The completion's tokens with the engine's sampling log-probs (and the trainer's, on
    steps that measured them), for the completions the engine returned log-probs for."""
    c = r.completion
    if decode is None or not getattr(c, "logprobs_known", False):
        return {}
    view: dict[str, Any] = {"tokens": [decode(t) for t in c.token_ids], "token_logprobs": [float(x) for x in c.logprobs]}
    rows = batch.logprob_gap[2] if batch.logprob_gap and len(batch.logprob_gap) > 2 else []
    if index < len(rows) and len(rows[index]) == len(c.token_ids):
        view["trainer_logprobs"] = rows[index]
    return view


def sample_groups(batch: RolloutBatch, joined: list[list[ScoredRow]], *, decode: Callable[[int], str] | None = None,
                  token_groups: int = 0) -> list[E.SampleGroup]:
    """One SampleGroup per prompt; the first `token_groups` groups carry the token view."""
    groups: list[E.SampleGroup] = []
    row = 0
    for prompt, rows in zip(batch.prompts, joined, strict=True):
        first = row
        row += len(rows)
        totals = [r.total for r in rows if r.total is not None]  # NaN rewards are alerted elsewhere
        # validated as one nested object per group (pydantic checks the completions in one call,
        # not one Python constructor per completion: this runs on the training thread every step)
        groups.append(
            E.SampleGroup.model_validate({
                "step": batch.step,
                "group": rows[0].group if rows else len(groups),
                "prompt": prompt_text(prompt),
                "completions": [
                    {
                        "text": r.completion.text,
                        "rewards": r.rewards,
                        "reward": r.total or 0.0,
                        "advantage": r.advantage or 0.0,
                        "length": len(r.completion.token_ids),
                        "truncated": r.completion.truncated,
                        **(_token_view(batch, r, first + k, decode) if len(groups) < token_groups else {}),
                    }
                    for k, r in enumerate(rows)
                ],
                "weight_version": batch.weight_version,
                "reward_mean": statistics.fmean(totals) if totals else 0.0,
                "reward_std": _group_std(totals) if len(totals) > 1 else 0.0,
            })
        )
    return groups


def reward_by_ending(joined: list[list[ScoredRow]]) -> tuple[float | None, float | None]:
    """Mean total reward of the completions that finished, and of those cut at max_tokens."""
    ended: dict[bool, list[float]] = {False: [], True: []}
    for rows in joined:
        for r in rows:
            if r.total is not None:
                ended[bool(r.completion.truncated)].append(r.total)
    return (statistics.fmean(ended[False]) if ended[False] else None,
            statistics.fmean(ended[True]) if ended[True] else None)


EVIDENCE_GROUPS = 3  # groups named per signal
# bounds that keep the signals cheap on the training thread whatever G and max_tokens are
SIGNAL_TOKENS = 256  # n-grams over a completion's first tokens
SIGNAL_PAIRS = 28  # completion pairs compared per group (all of them up to G = 8)


def _group_std(xs: list[float]) -> float:
    """The group's sample standard deviation (n - 1), the one TRL divides the advantages by
    (`nanstd`, Bessel-corrected), so a group's std and its advantages agree on the screen
    ([0, 0, 0, 1]: std 0.5, advantages +1.5 and -0.5). In floats: statistics.stdev computes it
    in exact fractions, ~60 us per group of 8 on the training thread; this agrees to ~1e-16."""
    if min(xs) == max(xs):
        return 0.0  # exactly, as a group with one reward value must read (zero-std groups)
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) * (x - m) for x in xs) / (len(xs) - 1))


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sx = math.fsum((x - mx) ** 2 for x in xs)
    sy = math.fsum((y - my) ** 2 for y in ys)
    if sx <= 0 or sy <= 0:
        return None
    return math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(sx * sy)


@dataclass
class Signals:
    """What the batch says beyond its reward: diversity inside groups and reward-hacking hints."""

    distinct_ratio: float | None = None
    unsolved_distinct_ratio: float | None = None
    group_overlap: float | None = None
    repetition: float | None = None
    reward_length_corr: float | None = None
    ground_truth_mean: float | None = None
    evidence: dict[str, list[int]] | None = None


def signals(joined: list[list[ScoredRow]], ground_truth: str = "") -> Signals:
    """Per step, from the joined rows (token ids, totals, per-function rewards): the in-group
    diversity signals and the reward-hacking signals (two passes, so each one's cost can be
    measured on its own: bench/feature_cost.py)."""
    div, evidence = diversity(joined)
    hack, more = hacking(joined, ground_truth)
    return Signals(**div, **hack, evidence={k: v for k, v in {**evidence, **more}.items() if v})


def diversity(joined: list[list[ScoredRow]]) -> tuple[dict[str, float | None], dict[str, list[int]]]:
    """Distinct completions per group (all groups, and the groups below the batch's best),
    mean pairwise trigram overlap inside groups, repetition inside completions; and the least
    diverse unsolved groups as evidence."""
    distinct: list[float] = []
    overlap: list[float] = []
    repeats: list[float] = []
    by_group_distinct: list[tuple[float, int]] = []
    # groups below the batch's best group mean: a group that converged on the best answer is
    # solved, not collapsed (its identical completions are the goal, and zero_std reports it)
    means = [statistics.fmean(t) if (t := [r.total for r in rows if r.total is not None]) else None for rows in joined]
    best = max((m for m in means if m is not None), default=None)
    unsolved: list[float] = []
    for gi, rows in enumerate(joined):
        if not rows:
            continue
        ids = [r.completion.token_ids for r in rows]
        d = len({tuple(t) for t in ids}) / len(rows)
        distinct.append(d)
        mean = means[gi]
        if best is not None and mean is not None and mean < best - 1e-9:
            unsolved.append(d)
            by_group_distinct.append((d, gi))
        grams = []  # each completion's distinct trigrams over its first SIGNAL_TOKENS tokens
        for t in ids:
            t = t[:SIGNAL_TOKENS]
            g = set(zip(t, t[1:], t[2:]))
            if g:  # repetition: the share of its trigrams that repeat an earlier one
                repeats.append(1 - len(g) / (len(t) - 2))
            grams.append(g)
        jaccard: list[float] = []  # the first SIGNAL_PAIRS pairs of which one has a trigram
        for i, a in enumerate(grams):
            for b in grams[i + 1:]:
                if a or b:
                    common = len(a & b)
                    jaccard.append(common / (len(a) + len(b) - common))
                    if len(jaccard) == SIGNAL_PAIRS:
                        break
            if len(jaccard) == SIGNAL_PAIRS:
                break
        if jaccard:
            overlap.append(math.fsum(jaccard) / len(jaccard))
    return ({
        "distinct_ratio": statistics.fmean(distinct) if distinct else None,
        "unsolved_distinct_ratio": statistics.fmean(unsolved) if unsolved else None,
        "group_overlap": statistics.fmean(overlap) if overlap else None,
        "repetition": statistics.fmean(repeats) if repeats else None,
    }, {"diversity": [g for _, g in sorted(by_group_distinct)[:EVIDENCE_GROUPS]]})


def hacking(joined: list[list[ScoredRow]], ground_truth: str = "") -> tuple[dict[str, float | None], dict[str, list[int]]]:
    """Correlation of total reward with completion length (batch-wide; the most correlated
    groups as evidence) and the ground-truth function's mean (the groups where the total runs
    furthest above it as evidence)."""
    lengths: list[int] = []
    totals: list[float] = []
    gt: list[float] = []
    by_group_corr: list[tuple[float, int]] = []
    by_group_gap: list[tuple[float, int]] = []
    for gi, rows in enumerate(joined):
        scored = [(len(r.completion.token_ids), r.total) for r in rows if r.total is not None]
        lengths.extend(x for x, _ in scored)
        totals.extend(y for _, y in scored)
        c = _pearson([float(x) for x, _ in scored], [y for _, y in scored])
        if c is not None:
            by_group_corr.append((c, gi))
        if ground_truth:
            vals = [r.rewards.get(ground_truth) for r in rows]
            known = [(r.total, v) for r, v in zip(rows, vals) if v is not None and r.total is not None]
            gt.extend(v for _, v in known)
            if known:
                by_group_gap.append((statistics.fmean(t - v for t, v in known), gi))
    evidence = {"length": [g for _, g in sorted(by_group_corr, reverse=True)[:EVIDENCE_GROUPS]]}
    if ground_truth:
        evidence["ground_truth"] = [g for _, g in sorted(by_group_gap, reverse=True)[:EVIDENCE_GROUPS]]
    return ({
        "reward_length_corr": _pearson([float(x) for x in lengths], totals),
        "ground_truth_mean": statistics.fmean(gt) if gt else None,
    }, evidence)


def step_metrics(step: int, logs: dict[str, Any], batch: RolloutBatch | None, total_s: float, reward_names: list[str],
                 weight_version: int, update_skipped: str, sig: Signals | None = None, compile_s: float = 0.0) -> E.StepMetrics:
    """TRL's logged scalars for the step, plus what the console measured itself."""
    b = batch
    gen = b.generate_s if b else 0.0
    score = b.score_s if b else 0.0
    sync = b.sync_s if b else 0.0
    truncated = sum(c.truncated for g in b.groups for c in g) / max(1, b.num_completions) if b else 0.0
    return E.StepMetrics(
        step=step,
        loss=clean(logs.get("loss")),
        kl=clean(logs.get("kl")),
        grad_norm=clean(logs.get("grad_norm")),
        learning_rate=clean(logs.get("learning_rate")),
        reward_mean=clean(logs.get("reward")) or 0.0,
        reward_std=clean(logs.get("reward_std")) or 0.0,
        rewards_by_function={n: v for n in reward_names if (v := clean(logs.get(f"rewards/{n}/mean"))) is not None},
        frac_reward_zero_std=clean(logs.get("frac_reward_zero_std")) or 0.0,
        truncated_ratio=truncated,
        clip_ratio=clean(logs.get("clip_ratio/region_mean")),
        entropy=clean(logs.get("entropy")),
        completion_length_mean=clean(logs.get("completions/mean_length")) or 0.0,
        logprob_diff_mean=b.logprob_gap[0] if b and b.logprob_gap else None,
        logprob_diff_max=b.logprob_gap[1] if b and b.logprob_gap else None,  # (the per-row part goes to the token view)
        reward_finished=b.reward_finished if b else None,
        reward_truncated=b.reward_truncated if b else None,
        update_skipped=update_skipped,
        distinct_ratio=sig.distinct_ratio if sig else None,
        unsolved_distinct_ratio=sig.unsolved_distinct_ratio if sig else None,
        group_overlap=sig.group_overlap if sig else None,
        repetition=sig.repetition if sig else None,
        reward_length_corr=sig.reward_length_corr if sig else None,
        ground_truth_mean=sig.ground_truth_mean if sig else None,
        evidence=(sig.evidence or {}) if sig else {},
        times=E.StepTimes(generate=gen, score=score, sync=sync, train=max(0.0, total_s - gen - score - sync), total=total_s,
                           compile=min(compile_s, total_s)),
        tokens_per_s=(b.generated_tokens / gen) if b and gen > 0 else 0.0,
        samples_per_s=(b.num_completions / total_s) if b and total_s > 0 else 0.0,
        weight_version=weight_version,
    )


def clean(x: Any) -> float | None:
    """A finite float, or None (missing, not a number, NaN, inf)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
