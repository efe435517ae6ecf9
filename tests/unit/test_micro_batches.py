"""training.micro_batches: the step's update in k passes (TRL's gradient accumulation with one
generation per optimizer step), the batch sizes TRL gets, and the settings it refuses."""

import pytest

from backend.settings import ProfileError, load_profile

pytest.importorskip("trl")


def _config(**training):
    from backend.training.factory import grpo_config

    return grpo_config(load_profile(None, training=training, sampling={"num_generations": 4}), "/tmp/x", "cpu", [1.0], 10)


def test_one_generation_and_one_optimizer_step_per_step_in_k_passes():
    args = _config(prompts_per_step=8, micro_batches=4)
    assert args.per_device_train_batch_size == 8  # 8 prompts × G 4 / 4 passes
    assert args.gradient_accumulation_steps == 4 and args.steps_per_generation == 4
    assert args.generation_batch_size == 32  # the whole step's batch, generated once
    one = _config(prompts_per_step=8)
    assert (one.per_device_train_batch_size, one.gradient_accumulation_steps, one.generation_batch_size) == (32, 1, 32)


def test_micro_batches_must_divide_the_batch():
    with pytest.raises(ProfileError, match=r"micro_batches = 3 must divide the step's batch: .* 8 × 4 = 32"):
        load_profile(None, training={"prompts_per_step": 8, "micro_batches": 3}, sampling={"num_generations": 4})
    load_profile(None, training={"micro_batches": 2, "overlap": True})  # overlap reads one generation batch ahead
    load_profile(None, training={"prompts_per_step": 8, "micro_batches": 8}, sampling={"num_generations": 4})


@pytest.mark.parametrize("field", ["gradient_accumulation_steps", "steps_per_generation", "generation_batch_size",
                                   "per_device_train_batch_size"])
def test_trl_batch_fields_are_refused_naming_the_settings_that_size_the_step(field):
    """Set in [trl] they would change how many prompts a step trains on behind the console's back."""
    with pytest.raises(ProfileError, match=f"{field}.*training.micro_batches"):
        load_profile(None, trl={"loss_type": "dapo", field: 2})


def test_a_live_group_size_that_does_not_divide_by_micro_batches_is_rejected():
    from types import SimpleNamespace

    from backend.controller import Controller

    profile = load_profile(None, training={"prompts_per_step": 3, "micro_batches": 3}, sampling={"num_generations": 4})
    c = Controller.__new__(Controller)
    c.profile, c.params = profile, profile.live_params()
    c.session = SimpleNamespace(max_prompt_tokens=8, has_ref_model=False)
    assert c._param_guardrails({"num_generations": 2}) == ""  # 3 × 2 = 6: divides by 3
    c.params = {**c.params, "num_generations": 4}
    why = c._param_guardrails({"num_generations": 5})  # 3 × 5 = 15: divides by 3 too
    assert why == ""
    profile2 = load_profile(None, training={"prompts_per_step": 2, "micro_batches": 4}, sampling={"num_generations": 4})
    c.profile, c.params = profile2, profile2.live_params()
    why = c._param_guardrails({"num_generations": 5})  # 2 × 5 = 10: not by 4
    assert "must divide by training.micro_batches = 4" in why
    assert c._param_guardrails({"num_generations": 6}) == ""  # 12: by 4


def test_out_of_memory_names_the_passes_and_what_to_change():
    import torch

    from backend.controller import Controller

    profile = load_profile(None, training={"prompts_per_step": 64, "micro_batches": 2}, sampling={"num_generations": 8})
    c = Controller.__new__(Controller)
    c.profile, c.params = profile, profile.live_params()
    hint = c._hint(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 588.00 MiB"))
    assert "each update pass holds 256 sequences" in hint and "raise training.micro_batches" in hint
    assert c._hint(ValueError("x")) == ""


def test_every_reason_a_change_is_refused_is_said_at_once():
    """max_tokens over the run's limit, a G the micro-batches do not divide and beta without a
    reference model, in one change: one rejection naming all three, not three round trips."""
    from types import SimpleNamespace

    from backend.controller import Controller

    profile = load_profile(None, training={"prompts_per_step": 2, "micro_batches": 4}, sampling={"num_generations": 4})
    c = Controller.__new__(Controller)
    c.profile, c.params = profile, profile.live_params()
    c.session = SimpleNamespace(max_prompt_tokens=8, has_ref_model=False)
    why = c._param_guardrails({"max_tokens": profile.engine.max_model_len, "num_generations": 5, "beta": 0.1})
    parts = why.split("; ")
    assert len(parts) == 3, why
    assert "exceeds engine.max_model_len" in parts[0] and "micro_batches = 4" in parts[1] and "reference model" in parts[2]
