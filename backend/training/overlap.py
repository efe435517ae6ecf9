"""Overlap (`training.overlap`): generate step s+1's rollout while the trainer runs step s's update.

    boundary s   wait for the rollout in flight (it is step s's) -> commands -> sync v_s -> sampling
                 take step s's rollout if it still fits, else generate it now
                 start step s+1's rollout on the engine (weights v_s), in the background  ──┐
    [TRL]        score, advantages, loss, backward, optimizer step            (overlapped) │
    boundary s+1 wait for it  <─────────────────────────────────────────────────────────────┘

Step s+1's prompts are known during step s because the trainer's dataloader is read one
batch ahead (`Lookahead`, through `ConsoleGRPOTrainer.get_batch_samples`): the batch the
prefetch samples for is the very batch the trainer receives next, taken from the same
iterator, not a prediction of the sampler. Still, at step s+1 the rollout is used only if
its prompts (text and token ids), its sampling parameters and its step match that step's
exactly, and it is at most one weight version old; otherwise it is dropped and the step's
rollout is generated synchronously, with the reason recorded (`StepMetrics.overlap_fallback`,
and a `log` warning when the prompts differ). Nothing is trained on a rollout of other
prompts or other sampling parameters.

The engine is one object: nothing else touches it while a rollout is in flight. The step
loop waits for it at the top of every boundary, before pause, commands, probes or a weight
push (and `StepLoop.sync` waits again before pushing, whatever called it).
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from backend.engine.base import GeneratedCompletion, Sampling

_NOTHING = object()


class Lookahead:
    """Reads the trainer's epoch iterator one batch ahead, handing batches over in order.

    `wrap(it)` returns the iterator the trainer reads from (the same wrapper for the same
    epoch iterator); `upcoming()` is the batch the trainer will get next (None at the end
    of the epoch, or before the first batch of an epoch was asked for)."""

    def __init__(self) -> None:
        self._source: Any = None
        self._buffer: Any = _NOTHING
        self._exhausted = False

    def wrap(self, epoch_iterator: Any) -> "Lookahead":
        if epoch_iterator is not self._source and epoch_iterator is not self:
            self._source, self._buffer, self._exhausted = epoch_iterator, _NOTHING, False
        return self

    def __iter__(self) -> "Lookahead":
        return self

    def __next__(self) -> Any:
        if self._buffer is not _NOTHING:
            batch, self._buffer = self._buffer, _NOTHING
            return batch
        if self._exhausted or self._source is None:
            raise StopIteration
        try:
            return next(self._source)
        except StopIteration:
            self._exhausted = True
            raise

    def upcoming(self) -> Any | None:
        if self._buffer is _NOTHING and not self._exhausted and self._source is not None:
            try:
                self._buffer = next(self._source)
            except StopIteration:
                self._exhausted = True
        return None if self._buffer is _NOTHING else self._buffer


@dataclass
class Rollout:
    """A rollout generated ahead: for which step, of what, with which weights and sampling."""

    step: int
    prompts: list[Any]  # distinct prompts, one per group
    prompt_ids: list[list[int]]
    sampling: Sampling
    weight_version: int
    groups: list[list[GeneratedCompletion]] | None = None
    error: str = ""
    generate_s: float = 0.0  # engine wall time, behind the previous step's update
    waited_s: float = 0.0  # how long the training thread then waited for it
    started: float = field(default_factory=time.perf_counter)


class Prefetcher:
    """At most one rollout in flight on one long-lived thread (a thread per rollout costs
    ~100 ms on CUDA), and at most one ready to be taken."""

    def __init__(self, generate: Callable[[list[list[int]], Sampling], list[list[GeneratedCompletion]]]) -> None:
        self._generate = generate
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._future: concurrent.futures.Future | None = None
        self._job: Rollout | None = None  # in flight, or ready once waited for
        self._dropped = ""  # why the last ready rollout was dropped (reported by take)

    @property
    def in_flight(self) -> bool:
        return self._future is not None

    def start(self, job: Rollout) -> None:
        if self._future is not None:
            raise RuntimeError(f"a rollout for step {self._job.step} is still in flight; wait for it first")
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlc-rollout")
        self._job, self._dropped = job, ""
        self._future = self._pool.submit(self._run, job)

    def _run(self, job: Rollout) -> None:
        t0 = time.perf_counter()
        try:
            job.groups = self._generate(job.prompt_ids, job.sampling)
        except BaseException as exc:  # noqa: BLE001 - reported at the next boundary, which falls back
            job.error = f"{type(exc).__name__}: {exc}"
        job.generate_s = time.perf_counter() - t0

    def wait(self) -> float:
        """Block until the rollout in flight (if any) is done; the engine is idle afterwards.
        Returns the seconds waited."""
        if self._future is None:
            return 0.0
        t0 = time.perf_counter()
        try:
            self._future.result()
        finally:
            self._future = None
        waited = time.perf_counter() - t0
        if self._job is not None:
            self._job.waited_s = waited
        return waited

    def drop(self, why: str) -> None:
        """Forget the ready rollout (after waiting for it): the next step generates its own."""
        self.wait()
        if self._job is not None:
            self._job, self._dropped = None, why

    def take(self, step: int, prompts: list[Any], prompt_ids: list[list[int]], sampling: Sampling,
             weight_version: int) -> tuple[Rollout | None, str]:
        """The ready rollout if it is step `step`'s: the same prompts and token ids, the same
        sampling, at most one version older than `weight_version` (the weights the loss uses).
        Otherwise (None, why) and it is forgotten."""
        self.wait()
        job, self._job = self._job, None
        if job is None:
            why, self._dropped = self._dropped or "no rollout was generated ahead", ""
            return None, why
        if job.error:
            return None, f"the rollout generated ahead failed: {job.error}"
        if job.step != step:
            return None, f"the rollout generated ahead was for step {job.step}, not {step}"
        if job.prompts != prompts or job.prompt_ids != prompt_ids:
            return None, f"step {step}'s prompts differ from the ones generated ahead ({_first_difference(job.prompts, prompts)})"
        if job.sampling != sampling:
            return None, f"sampling changed at the boundary ({_sampling_difference(job.sampling, sampling)})"
        gap = weight_version - job.weight_version
        if not 0 <= gap <= 1:
            return None, f"the rollout generated ahead is {gap} weight versions old (v{job.weight_version}, now v{weight_version})"
        return job, ""

    def close(self) -> None:
        """Wait for the rollout in flight, then end the thread (before the engine shuts down)."""
        try:
            self.wait()
        except BaseException:  # noqa: BLE001 - closing after a failure: the failure is already reported
            pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._job = None


def _first_difference(ahead: list[Any], now: list[Any]) -> str:
    if len(ahead) != len(now):
        return f"{len(ahead)} prompts generated ahead, {len(now)} now"
    for i, (a, b) in enumerate(zip(ahead, now)):
        if a != b:
            return f"group {i}: {str(a)[:40]!r} generated ahead, {str(b)[:40]!r} now"
    return "same text, different token ids"


def _sampling_difference(ahead: Sampling, now: Sampling) -> str:
    a, b = ({"n": s.n, **s.params, "seed": s.seed, "logprobs": s.logprobs, "logprobs_prompts": s.logprobs_prompts} for s in (ahead, now))
    return ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))


def ratio_from_loss(trainer: Any) -> bool:
    """Can the importance-sampling ratio come from the loss's own forward pass (`LossImportance`)?
    Where each rollout is used once and all its micro-batches' losses run before the optimizer
    step (TRL's own condition for skipping `old_per_token_logps`), the loss's log-probs are the
    pre-update policy's: exactly what TRL's scoring runs a separate forward pass for."""
    args = trainer.args
    once = getattr(trainer, "num_iterations", 1) == 1 and args.gradient_accumulation_steps % args.steps_per_generation == 0
    return once and not getattr(args, "use_liger_kernel", False)  # (Liger's loss makes no forward the console sees)


def importance_ratio(trainer: Any, logps: Any, sampling: Any, mask: Any) -> Any:
    """The importance-sampling ratio of TRL's correction (`vllm_importance_sampling_mode`,
    its clip bounds), the way GRPOTrainer's scoring computes it from the pre-update policy's
    per-token log-probs `logps` and the engine's `sampling` ones: per sequence ([B, 1], the
    sum of the token differences) or per token ([B, T]); truncated to the bounds, or set to 0
    outside them. Tokens without a sampling log-prob (NaN) count as agreeing."""
    import math

    import torch

    diff = torch.nan_to_num((logps - sampling) * mask, nan=0.0)
    mode = trainer.vllm_importance_sampling_mode
    if mode.startswith("sequence_"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    lo, hi = trainer.vllm_importance_sampling_clip_min, trainer.vllm_importance_sampling_clip_max
    if mode.endswith("_truncate"):
        return ratio if lo is None and hi is None else torch.clamp(ratio, min=lo, max=hi)
    if mode.endswith("_mask"):
        low = lo if lo is not None else -math.inf
        high = hi if hi is not None else math.inf
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
    raise ValueError(f"unknown vllm_importance_sampling_mode {mode!r}")


class LossImportance:
    """The overlapped step's importance-sampling correction, its ratio taken from the loss's own
    forward pass instead of the separate one TRL's scoring runs for it (`ratio_from_loss`): each
    micro-batch's ratio goes into its inputs as the loss computes its log-probs, before TRL's
    loss multiplies by it; once the whole batch is seen, TRL's ratio statistics
    (`sampling/importance_sampling_ratio/*`) are logged and the share it masked or truncated is
    known (`clipped`)."""

    def __init__(self, trainer: Any, rows: int) -> None:
        self.trainer, self.rows, self.seen = trainer, rows, 0
        self.values: list[Any] = []  # what TRL's statistics are over: one ratio per sequence, or per real token
        self.clipped: float | None = None

    def add(self, inputs: dict[str, Any], logps: Any) -> None:
        import torch

        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        sampling = inputs.get("sampling_per_token_logps")
        if sampling is None:  # the engine gave no log-probs: nothing to correct
            ratio = torch.ones(logps.size(0), 1, device=logps.device)
        else:
            ratio = importance_ratio(self.trainer, logps.detach(), sampling, mask)
        inputs["importance_sampling_ratio"] = ratio
        self.values.append(_ratio_values(ratio, mask))
        self.seen += logps.size(0)

    def complete(self) -> bool:
        return self.seen >= self.rows

    def finish(self) -> None:
        """Log TRL's ratio statistics for the batch and work out the clipped share."""
        import torch

        values = torch.cat(self.values).float() if self.values else torch.zeros(0)
        self.values = []
        if values.numel() == 0:
            return
        # one device-to-host copy for the four numbers
        low, mean, high, self.clipped = torch.stack([values.min(), values.mean(), values.max(),
                                                     _clipped_hits(self.trainer, values).float().mean()]).tolist()
        metrics = self.trainer._metrics["train"]
        metrics["sampling/importance_sampling_ratio/min"].append(low)
        metrics["sampling/importance_sampling_ratio/mean"].append(mean)
        metrics["sampling/importance_sampling_ratio/max"].append(high)


def _ratio_values(ratio: Any, mask: Any) -> Any:
    """What TRL's ratio statistics are over: one ratio per sequence (sequence_* modes), or one
    per real token."""
    return ratio.flatten() if ratio.shape[-1] == 1 else ratio[mask.bool()]


def _clipped_hits(trainer: Any, values: Any) -> Any:
    """Which ratios TRL's correction masked (0) or truncated at its bounds."""
    import torch

    if trainer.vllm_importance_sampling_mode.endswith("_mask"):
        hit = values == 0
    else:
        lo, hi = trainer.vllm_importance_sampling_clip_min, trainer.vllm_importance_sampling_clip_max
        hit = torch.zeros_like(values, dtype=torch.bool)
        if hi is not None:
            hit |= values >= hi
        if lo is not None:
            hit |= values <= lo
    return hit


def importance_clipped(trainer: Any, out: dict[str, Any]) -> float | None:
    """Share of the sequences (tokens, in TRL's token_* modes) whose importance-sampling ratio
    TRL masked (set to 0) or truncated at its bounds in this batch; None without the correction."""
    ratio = out.get("importance_sampling_ratio")
    if ratio is None:
        return None
    values = _ratio_values(ratio.detach().float(), out["completion_mask"])
    if values.numel() == 0:
        return None
    return float(_clipped_hits(trainer, values).float().mean())


def metric_fields(batch: Any, logs: dict[str, Any], times: Any, overlap: bool) -> dict[str, Any]:
    """The StepMetrics fields of overlap and of TRL's importance-sampling correction for one step."""
    from backend.training.report import clean

    fields: dict[str, Any] = {
        "is_ratio_min": clean(logs.get("sampling/importance_sampling_ratio/min")),
        "is_ratio_mean": clean(logs.get("sampling/importance_sampling_ratio/mean")),
        "is_ratio_max": clean(logs.get("sampling/importance_sampling_ratio/max")),
    }
    if batch is None:
        return fields
    fields["is_clipped_frac"] = batch.is_clipped
    if not overlap:
        return fields
    fields.update(staleness=batch.staleness, prefetched=batch.prefetched, overlap_fallback=batch.overlap_fallback)
    if batch.prefetched:  # the engine's time ran behind the previous update: the step only waited
        exposed = batch.waited_s
        fields["generate_hidden_s"] = max(0.0, batch.generate_s - exposed)
        fields["times"] = times.model_copy(update={
            "generate": exposed, "train": max(0.0, times.total - exposed - times.score - times.sync)})
        fields["tokens_per_s"] = batch.generated_tokens / batch.generate_s if batch.generate_s > 0 else 0.0
    return fields
