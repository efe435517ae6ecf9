"""TRL GRPO wired around the project's engine.

TRL's GRPOTrainer keeps rewards, advantages, the loss and the optimizer. Rollouts come
from our `RolloutEngine` through TRL's `rollout_func` hook, because TRL's own vLLM
integration cannot give the control the console needs: it owns the engine (no pause,
no verified resync, no sampling changes between steps) and its per-parameter
`load_weights` sync fails on the CPU backend in fp32.

Stages per step, named as in the paper: generate -> score -> advantages -> update -> sync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from backend.engine.base import EngineError, GeneratedCompletion, Sampling
from backend.training import trl_compat
from backend.training.overlap import importance_clipped


@dataclass
class RolloutBatch:
    """What one step generated, kept until the scores and advantages are known."""

    step: int
    prompts: list[Any]  # one per group
    groups: list[list[GeneratedCompletion]]
    weight_version: int
    sampling: Sampling
    generate_s: float
    sync_s: float = 0.0
    score_s: float = 0.0
    logprob_gap: tuple[float, float, list[list[float]]] | None = None  # (mean, max, first rows) trainer vs engine
    reward_finished: float | None = None
    reward_truncated: float | None = None
    # overlap (training.overlap): generated during the previous step's update? why not (when on)?
    prefetched: bool = False
    overlap_fallback: str = ""
    waited_s: float = 0.0  # what the step waited for a rollout generated ahead
    staleness: int = 0  # weight versions between the sampling weights and the loss's (set when scored)
    is_clipped: float | None = None  # share TRL's importance-sampling correction masked or truncated

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) for g in self.groups for c in g)

    @property
    def num_completions(self) -> int:
        return sum(len(g) for g in self.groups)


class StopTraining(Exception):
    """Raised at a step boundary to end `train()` cleanly (stop, or a restart for a new G)."""

    def __init__(self, reason: str, restart: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.restart = restart


def make_trainer_class():
    from trl import GRPOTrainer

    class ConsoleGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that hands each scored batch (with TRL's advantages) to the step loop."""

        rlc_hooks: Any = None
        rlc_lookahead: Any = None  # overlap.Lookahead when training.overlap: the next batch is known a step early

    def scored(self, inputs):
        out = getattr(super(ConsoleGRPOTrainer, self), trl_compat.SCORE_HOOK)(inputs)
        if self.rlc_hooks is not None:
            gap = (logprob_gap(self, out, rows=self.rlc_hooks.token_rows, limit=self.rlc_hooks.measure_rows)
                   if self.rlc_hooks.measuring_logprobs else None)
            self.rlc_hooks.scored(self, out["advantages"].detach().float().cpu().tolist(), gap,
                                  is_clipped=importance_clipped(self, out))
        return out

    def batch_samples(self, epoch_iterator, num_batches, device):
        if self.rlc_lookahead is not None:
            epoch_iterator = self.rlc_lookahead.wrap(epoch_iterator)
        return getattr(super(ConsoleGRPOTrainer, self), trl_compat.BATCH_HOOK)(epoch_iterator, num_batches, device)

    setattr(ConsoleGRPOTrainer, trl_compat.SCORE_HOOK, scored)  # see trl_compat.SCORE_HOOK
    setattr(ConsoleGRPOTrainer, trl_compat.BATCH_HOOK, batch_samples)  # see trl_compat.BATCH_HOOK
    return ConsoleGRPOTrainer


class RolloutFunc:
    """TRL `rollout_func`: prompts arrive repeated G times (RepeatSampler); we ask the
    engine once per distinct prompt with n=G and return per-completion rows."""

    def __init__(self, engine, tokenizer, hooks) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.hooks = hooks

    def encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list):  # conversational
            ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def __call__(self, prompts: list[Any], trainer) -> dict[str, Any]:
        sampling, sync_s, version, step = self.hooks.before_rollout(trainer)
        g = sampling.n
        if len(prompts) % g:
            raise RuntimeError(f"rollout got {len(prompts)} prompts, not a multiple of G={g}")
        distinct = [prompts[i] for i in range(0, len(prompts), g)]
        prompt_ids = [self.encode(p) for p in distinct]
        # overlap: the rollout generated during the previous step's update, if it is this step's
        ahead, why = self.hooks.take_prefetched(step, distinct, prompt_ids, sampling)
        if ahead is not None:
            groups, version, sampling, gen_s = ahead.groups, ahead.weight_version, ahead.sampling, ahead.generate_s
        else:
            t0 = time.perf_counter()
            try:
                groups = self.engine.generate(prompt_ids, sampling)
            except EngineError as exc:
                if not hasattr(self.engine, "restart_dead"):
                    raise  # an in-process engine that died takes the run with it: fail loudly
                self.hooks.recover_engine(exc)  # alert, restart, re-push + verify, pause until resumed
                t0 = time.perf_counter()
                groups = self.engine.generate(prompt_ids, sampling)
            gen_s = time.perf_counter() - t0
        batch = RolloutBatch(
            step=step,
            prompts=distinct,
            groups=groups,
            weight_version=version,
            sampling=sampling,
            generate_s=gen_s,
            sync_s=sync_s,
            prefetched=ahead is not None,
            overlap_fallback=why,
            waited_s=ahead.waited_s if ahead is not None else gen_s,
        )
        self.hooks.rollout_done(batch)
        self.hooks.prefetch_next(trainer, self.encode)  # overlap: the next step's rollout, behind this update
        rows_prompt, rows_completion, rows_logprobs, rows_trunc = [], [], [], []
        for ids, group in zip(prompt_ids, groups):
            for c in group:
                rows_prompt.append(ids)
                rows_completion.append(c.token_ids)
                rows_logprobs.append(c.logprobs)
                rows_trunc.append(c.truncated)
        return {
            "prompt_ids": rows_prompt,
            "completion_ids": rows_completion,
            "logprobs": rows_logprobs,
            "truncated": rows_trunc,
        }


def logprob_gap(trainer, out: dict[str, Any], rows: int = 0, limit: int | None = None) -> tuple[float, float, list[list[float]]] | None:
    """(mean, max) |trainer log-prob - engine sampling log-prob| over the sampled tokens of the
    batch's first `limit` completions (all with None: the engine returned log-probs for those
    only), the trainer's log-probs computed as TRL computes them for its own importance sampling
    (`trl_compat.per_token_logps`, at the loss temperature), before the update; and the
    trainer's per-token log-probs of the batch's first `rows` completions (the token view)."""
    import torch

    sampling = out.get("sampling_per_token_logps")
    if sampling is None:
        return None
    head = slice(None, limit)
    sampling = sampling[head]
    prompt_ids, completion_ids = out["prompt_ids"][head], out["completion_ids"][head]
    mask = out["completion_mask"][head].bool()
    # TRL made this very call before the update where it applies its importance-sampling
    # correction (`old_per_token_logps`, e.g. training.overlap): reuse it, no second forward
    trainer_lp = out.get("old_per_token_logps")
    if trainer_lp is not None:
        trainer_lp = trainer_lp[head]
    else:
        with torch.no_grad():
            trainer_lp = trl_compat.per_token_logps(
                trainer,
                torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([out["prompt_mask"][head], out["completion_mask"][head]], dim=1),
                completion_ids.size(1),
                batch_size=trainer.args.per_device_train_batch_size,
            )
    delta = (trainer_lp.float() - sampling.float()).abs()[mask]
    delta = delta[~torch.isnan(delta)]
    if delta.numel() == 0:
        return None
    per_row = [trainer_lp[i][mask[i]].float().tolist() for i in range(min(rows, trainer_lp.size(0)))]
    return float(delta.mean()), float(delta.max()), per_row


def make_callback(hooks):
    from transformers import TrainerCallback

    class ConsoleCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            hooks.on_step_end(state)

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if model is not None:
                hooks.on_pre_optimizer_step(model)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                hooks.on_log(state, dict(logs))

    return ConsoleCallback()


def set_learning_rate(trainer, lr: float) -> None:
    """Takes effect at the very next optimizer step; the scheduler keeps it (constant schedule)."""
    if trainer.optimizer is not None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
            group["initial_lr"] = lr
    sched = getattr(trainer, "lr_scheduler", None)
    if sched is not None and hasattr(sched, "base_lrs"):
        sched.base_lrs = [lr for _ in sched.base_lrs]
    trainer.args.learning_rate = lr
