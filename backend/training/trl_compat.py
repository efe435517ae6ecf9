"""Every touch of TRL's (and transformers.Trainer's) private internals, in one place.

Written for TRL 1.16 (`pyproject.toml` pins the tested range). Each shim says what it
reaches, why there is no public way, and when it can go. `check()` runs before the trainer
is built: a TRL that moved one of these targets stops the run at start-up with a message
naming TRL and its version, not with an AttributeError mid-run.
"""

from __future__ import annotations

from typing import Any

TESTED = "trl>=1.16,<1.17"

#: GRPOTrainer method that generates (through `rollout_func`), scores and computes the
#: advantages of one batch. The console overrides it to receive the advantages TRL computed
#: (they are not in any callback or log). Can go when TRL reports advantages to callbacks.
SCORE_HOOK = "_generate_and_score_completions"

#: GRPOTrainer method computing per-token log-probs the way its loss does (temperature,
#: batch size); used to measure trainer-vs-engine log-prob agreement on the sampled tokens.
LOGPS = "_get_per_token_logps_and_entropies"

#: transformers.Trainer's one read of the epoch's data iterator per optimizer step. With
#: `training.overlap` the console's trainer reads through `overlap.Lookahead`, one batch ahead,
#: so the next step's prompts are known (exactly, from the same iterator) during this step.
#: Can go when TRL lets a rollout_func see the next generation batch.
BATCH_HOOK = "get_batch_samples"

#: GRPOTrainer's IS-correction gate. TRL applies its importance-sampling correction
#: (`vllm_importance_sampling_correction`: old_per_token_logps vs the rollout's sampling
#: log-probs, in `_generate_and_score_completions` and the loss) only when `use_vllm` is set,
#: which also makes TRL build its own vLLM at init. The console's rollouts come from its own
#: engine through `rollout_func` and carry the engine's sampling log-probs, so it sets the
#: flag after init (`enable_sampling_correction`). Can go when TRL gates the correction on the
#: presence of sampling log-probs instead.
IS_FLAG = "use_vllm"

#: transformers.Trainer's full checkpoint (model, optimizer, scheduler, RNG, data position):
#: the public `save_model` writes weights only, and resume needs the rest.
SAVE = "_save_checkpoint"


#: transformers.Trainer's total gradient norm of each optimizer step (before clipping; it is
#: computed every step, clipped or not). The console's NaN/Inf guard reads the value instead of
#: a second pass over the gradients. Optional: where the method is gone the guard computes the
#: norm itself. Can go when transformers hands the norm to `on_pre_optimizer_step`.
GRAD_NORM = "_get_grad_norm"


#: trl.trainer.utils' vocabulary tile of the fused LM head's log-prob (`add_fused_lm_head`): a
#: [tokens, tile] buffer is allocated for every forward and backward. With a vocabulary smaller
#: than the tile (the embedded default's 49 tokens against 32,768) the buffer is mostly unused,
#: but at 112 MiB it is mapped fresh each time, and its rows, one 128 KiB stride apart, fault in
#: one new page each: ~1,800 page faults a step on CPU. `fit_logprob_tile` narrows the tile to
#: the vocabulary; a vocabulary as large as the tile or larger is left as TRL has it. Optional:
#: where the constant is gone nothing is changed. Can go when TRL sizes the tile by the vocabulary.
LOGPROB_TILE = "_CHUNKED_LOGPROB_CHUNK_SIZE"


class TRLCompatError(RuntimeError):
    pass


def _targets() -> list[tuple[str, Any, str]]:
    from trl import GRPOTrainer
    from trl.trainer import utils

    return [
        (f"GRPOTrainer.{SCORE_HOOK}", GRPOTrainer, SCORE_HOOK),
        (f"GRPOTrainer.{LOGPS}", GRPOTrainer, LOGPS),
        (f"Trainer.{SAVE}", GRPOTrainer, SAVE),
        ("trl.trainer.utils.add_fused_lm_head", utils, "add_fused_lm_head"),
        (f"Trainer.{BATCH_HOOK}", GRPOTrainer, BATCH_HOOK),
    ]


#: GRPOConfig fields the overlap shims rely on (TRL's importance-sampling options)
IS_FIELDS = ("vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
             "vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max")


def problems() -> list[str]:
    """The shims whose target is missing in the installed TRL (empty when all is well)."""
    import dataclasses

    from trl import GRPOConfig

    missing = [name for name, owner, attr in _targets() if not callable(getattr(owner, attr, None))]
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    return missing + [f"GRPOConfig.{f}" for f in IS_FIELDS if f not in fields]


def check() -> None:
    missing = problems()
    if missing:
        import trl

        raise TRLCompatError(
            f"TRL {trl.__version__} lacks {', '.join(missing)}, which rl-console uses (written for {TESTED}); "
            f"install a tested version: pip install '{TESTED}'"
        )


def save_checkpoint(trainer: Any) -> int:
    """TRL's full checkpoint into `args.output_dir/checkpoint-<global_step>`; returns that step."""
    getattr(trainer, SAVE)(trainer.model, trial=None)
    return trainer.state.global_step


def per_token_logps(trainer: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, batch_size: int) -> Any:
    return getattr(trainer, LOGPS)(trainer.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size)[0]


def set_loss_temperature(trainer: Any, temperature: float) -> None:
    """Make the training log-probs use the sampling temperature: TRL fuses the temperature
    into the model's lm_head once at init (`add_fused_lm_head`); re-fuse with the new one.
    Can go when TRL reads the temperature per step."""
    from trl.trainer.utils import add_fused_lm_head

    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    add_fused_lm_head(base, temperature=temperature, cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32,
                      outputs=("log_probs", "entropy"))
    trainer.temperature = temperature
    trainer.args.temperature = temperature


def set_group_size(trainer: Any, g: int, prompts_per_step: int, max_steps: int, micro_batches: int = 1) -> None:
    """Prepare a stopped trainer for `train()` again with group size `g`: TRL builds G into
    its sampler and batch sizes at init (`_train_batch_size` is transformers' private copy of
    the batch size its dataloader uses; the dataloader's batch is that × steps_per_generation,
    one generation), and `global_step` restarts at 0 for the new call."""
    trainer.num_generations = g
    trainer.args.num_generations = g
    trainer.args.per_device_train_batch_size = prompts_per_step * g // micro_batches
    trainer.args.generation_batch_size = prompts_per_step * g
    trainer._train_batch_size = prompts_per_step * g // micro_batches
    trainer.args.max_steps = max_steps
    trainer.state.global_step = 0


def enable_sampling_correction(trainer: Any) -> None:
    """Turn on TRL's importance-sampling correction for rollouts from `rollout_func` (see
    `IS_FLAG`). With the flag set, TRL's `_generate` would also call its own vLLM's
    `sync_weights()` at every new global step; `_last_loaded_step` is made to track the global
    step on the console's trainer class, so that call never happens (the console syncs its own
    engine). Nothing else of TRL's vLLM path is reached on the rollout_func path (tools aside,
    which the console does not pass)."""
    cls = type(trainer)
    if not isinstance(getattr(cls, "_last_loaded_step", None), property):
        cls._last_loaded_step = property(lambda self: self.state.global_step, lambda self, value: None)
    setattr(trainer, IS_FLAG, True)
    trainer.vllm_generation = None  # TRL's own engine does not exist: a path that reached it fails, named


def fit_logprob_tile(vocab_size: int) -> int | None:
    """Narrow TRL's fused log-prob vocabulary tile to `vocab_size` where the vocabulary is the
    smaller (see `LOGPROB_TILE`); returns the tile now used (None where TRL has no such tile)."""
    from trl.trainer import utils

    tile = getattr(utils, LOGPROB_TILE, None)
    if not isinstance(tile, int):
        return None
    if 0 < vocab_size < tile:
        setattr(utils, LOGPROB_TILE, vocab_size)
        return vocab_size
    return tile
