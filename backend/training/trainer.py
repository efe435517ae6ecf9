"""TRL GRPO wired around the project's engine.

TRL's GRPOTrainer keeps rewards, advantages, the loss and the optimizer. Rollouts come
from our `RolloutEngine` through TRL's `rollout_func` hook, because TRL's own vLLM
integration cannot give the control the console needs: it owns the engine (no pause,
no verified resync, no sampling changes between steps) and its per-parameter
`load_weights` sync fails on the CPU backend in fp32.

Stages per step, named as in the paper: generate -> score -> advantages -> update -> sync.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from backend.engine.base import EngineError, GeneratedCompletion, Sampling
from backend.training import trl_compat
from backend.training.overlap import LossImportance, importance_clipped


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
        rlc_loss_logps: Any = None  # LossLogps: a measuring step's trainer log-probs, read from the loss's forward
        rlc_loss_inputs: Any = None  # the micro-batch whose loss is being computed (while it is)
        rlc_grad_norm: Any = None  # this optimizer step's total gradient norm, as the trainer computed it
        rlc_ratio_from_loss: bool = False  # overlap: TRL's importance ratio from the loss's forward (overlap.ratio_from_loss)
        rlc_loss_importance: Any = None  # LossImportance: this step's ratio, filled in by the loss's forward

    def scored(self, inputs):
        score = getattr(super(ConsoleGRPOTrainer, self), trl_compat.SCORE_HOOK)
        if self.rlc_ratio_from_loss:  # TRL's scoring skips its pre-update forward; the loss's gives the ratio
            setattr(self, trl_compat.IS_FLAG, False)
            try:
                out = score(inputs)
            finally:
                setattr(self, trl_compat.IS_FLAG, True)
            self.rlc_loss_importance = LossImportance(self, out["completion_ids"].size(0))
        else:
            out = score(inputs)
        hooks = self.rlc_hooks
        if hooks is not None:
            advantages, clipped = out["advantages"].detach().float().cpu().tolist(), importance_clipped(self, out)
            pending = LossLogps.start(out, rows=hooks.token_rows, limit=hooks.measure_rows) if hooks.measuring_logprobs else None
            self.rlc_loss_logps = pending  # (a capture the last step's loss left incomplete goes)
            if pending is not None:  # the loss's own forward gives the trainer's log-probs: the groups wait for it
                hooks.scored(self, advantages, None, is_clipped=clipped, agreement_pending=True)
            else:
                gap = (logprob_gap(self, out, rows=hooks.token_rows, limit=hooks.measure_rows)
                       if hooks.measuring_logprobs else None)
                hooks.scored(self, advantages, gap, is_clipped=clipped)
        return out

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = _compute_loss(self, model, inputs, *args, **kwargs)
        if self.rlc_hooks is not None:
            self.rlc_hooks.behind.release()  # the backward comes next: the step's report runs beside it
        return loss

    def _compute_loss(self, model, inputs, *args, **kwargs):
        pending, importance = self.rlc_loss_logps, self.rlc_loss_importance
        if pending is None and importance is None:
            return super(ConsoleGRPOTrainer, self).compute_loss(model, inputs, *args, **kwargs)
        self.rlc_loss_inputs = inputs
        try:
            loss = super(ConsoleGRPOTrainer, self).compute_loss(model, inputs, *args, **kwargs)
        except BaseException:  # the step's groups are logged all the same, without the trainer's part
            self.rlc_loss_logps = self.rlc_loss_importance = None
            if pending is not None:
                self.rlc_hooks.agreement(None)
            raise
        finally:
            self.rlc_loss_inputs = None
        if importance is not None and importance.complete():
            self.rlc_loss_importance = None
            importance.finish()
            if self.rlc_hooks is not None:
                self.rlc_hooks.importance(importance.clipped)
        if pending is not None and pending.complete():
            self.rlc_loss_logps = None
            self.rlc_hooks.agreement(pending.gap(self))
        return loss

    def per_token_logps(self, *args, **kwargs):
        result = getattr(super(ConsoleGRPOTrainer, self), trl_compat.LOGPS)(*args, **kwargs)
        inputs = self.rlc_loss_inputs
        if inputs is not None:  # the loss's forward (once per micro-batch)
            self.rlc_loss_inputs = None
            if self.rlc_loss_importance is not None:  # before TRL's loss multiplies by the ratio
                self.rlc_loss_importance.add(inputs, result[0])
            if self.rlc_loss_logps is not None:
                self.rlc_loss_logps.add(inputs, result[0])
        return result

    def batch_samples(self, epoch_iterator, num_batches, device):
        if self.rlc_lookahead is not None:
            epoch_iterator = self.rlc_lookahead.wrap(epoch_iterator)
        return getattr(super(ConsoleGRPOTrainer, self), trl_compat.BATCH_HOOK)(epoch_iterator, num_batches, device)

    def grad_norm(self, *args, **kwargs):
        self.rlc_grad_norm = getattr(super(ConsoleGRPOTrainer, self), trl_compat.GRAD_NORM)(*args, **kwargs)
        return self.rlc_grad_norm

    setattr(ConsoleGRPOTrainer, trl_compat.SCORE_HOOK, scored)  # see trl_compat.SCORE_HOOK
    if callable(getattr(GRPOTrainer, trl_compat.GRAD_NORM, None)):  # see trl_compat.GRAD_NORM (optional)
        setattr(ConsoleGRPOTrainer, trl_compat.GRAD_NORM, grad_norm)
    setattr(ConsoleGRPOTrainer, trl_compat.LOGPS, per_token_logps)  # see trl_compat.LOGPS
    ConsoleGRPOTrainer.compute_loss = compute_loss
    setattr(ConsoleGRPOTrainer, trl_compat.BATCH_HOOK, batch_samples)  # see trl_compat.BATCH_HOOK
    return ConsoleGRPOTrainer


class RolloutFunc:
    """TRL `rollout_func`: prompts arrive repeated G times (RepeatSampler); we ask the
    engine once per distinct prompt with n=G and return per-completion rows."""

    ENCODED_KEPT = 8192  # prompts whose token ids are kept (a dataset's prompts come back every epoch)

    def __init__(self, engine, tokenizer, hooks) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.hooks = hooks
        self._encoded: dict[Any, tuple[int, ...]] = {}

    def encode(self, prompt: Any) -> list[int]:
        """Token ids of a prompt (the chat template applied to messages), kept per prompt: the
        tokenizer (or the template's Jinja) runs once per distinct prompt, not once a step."""
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)
        ids = self._encoded.get(key)
        if ids is None:
            if len(self._encoded) >= self.ENCODED_KEPT:
                self._encoded.clear()
            ids = self._encoded[key] = tuple(self._encode(prompt))
        return list(ids)

    def _encode(self, prompt: Any) -> list[int]:
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


ROW_KEY = "rlc_row"  # each completion's row in the scored batch, through TRL's shuffle and split


class LossLogps:
    """A measuring step's trainer log-probs, taken from the loss's own forward pass instead of
    a second one: with one optimizer step per generation batch and no reuse of a rollout
    (`num_iterations` 1), TRL skips `old_per_token_logps` because the loss's log-probs are the
    pre-update policy's (its `per_token_logps.detach()`). TRL shuffles the batch and splits it
    into micro-batches; a row index rides along (`ROW_KEY`) so each completion's log-probs find
    their row again."""

    def __init__(self, out: dict[str, Any], rows: int, limit: int | None) -> None:
        import torch

        self.out, self.rows, self.limit = out, rows, limit
        n = out["completion_ids"].size(0)
        self.need = n if limit is None else min(limit, n)
        self.logps = torch.full(out["completion_ids"].shape, float("nan"), dtype=torch.float32, device=out["completion_ids"].device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=self.logps.device)
        out[ROW_KEY] = torch.arange(n, device=self.logps.device)

    @classmethod
    def start(cls, out: dict[str, Any], rows: int, limit: int | None) -> LossLogps | None:
        """None where TRL computed the pre-update log-probs itself (`old_per_token_logps`:
        importance sampling, overlap, rollout reuse) or the engine gave none: the scoring step
        reads them there, as before."""
        if out.get("sampling_per_token_logps") is None or out.get("old_per_token_logps") is not None:
            return None
        return cls(out, rows, limit)

    def add(self, inputs: dict[str, Any], logps: Any) -> None:
        idx = inputs.get(ROW_KEY)
        if idx is None or logps.size(1) != self.logps.size(1):
            return
        self.logps[idx] = logps.detach().float()
        self.seen[idx] = True

    def complete(self) -> bool:
        return bool(self.seen[: self.need].all())

    def gap(self, trainer) -> tuple[float, float, list[list[float]]] | None:
        return logprob_gap(trainer, self.out, rows=self.rows, limit=self.limit, trainer_lp=self.logps)


def logprob_gap(trainer, out: dict[str, Any], rows: int = 0, limit: int | None = None,
                trainer_lp: Any = None) -> tuple[float, float, list[list[float]]] | None:
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
    # correction (`old_per_token_logps`, e.g. training.overlap): reuse it, no second forward;
    # otherwise the loss's own forward gave them (`LossLogps`), or one forward here
    if trainer_lp is None:
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
