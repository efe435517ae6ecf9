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

#: transformers.Trainer's full checkpoint (model, optimizer, scheduler, RNG, data position):
#: the public `save_model` writes weights only, and resume needs the rest.
SAVE = "_save_checkpoint"


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
    ]


def problems() -> list[str]:
    """The shims whose target is missing in the installed TRL (empty when all is well)."""
    return [name for name, owner, attr in _targets() if not callable(getattr(owner, attr, None))]


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


def set_group_size(trainer: Any, g: int, prompts_per_step: int, max_steps: int) -> None:
    """Prepare a stopped trainer for `train()` again with group size `g`: TRL builds G into
    its sampler and batch sizes at init (`_train_batch_size` is transformers' private copy of
    the batch size its dataloader uses), and `global_step` restarts at 0 for the new call."""
    trainer.num_generations = g
    trainer.args.num_generations = g
    trainer.args.per_device_train_batch_size = prompts_per_step * g
    trainer.args.generation_batch_size = prompts_per_step * g
    trainer._train_batch_size = prompts_per_step * g
    trainer.args.max_steps = max_steps
    trainer.state.global_step = 0
