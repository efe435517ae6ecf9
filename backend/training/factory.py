"""Build the pieces of a run from a profile: model dir, tokenizer, policy, engine, trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backend.protocol.paths import home
from backend.settings import RunProfile
from backend.training import demo_task, pretrained
from backend.training.data import check_rows, load_dataset_spec
from backend.training.rewards import RewardCode, RewardRecorder, declared_range, load_callable
from backend.training.tiny_model import TinyModelSpec, ensure_model


@dataclass
class TaskParts:
    dataset: Any
    reward_funcs: list[Callable[..., Any]]
    reward_weights: list[float]
    reward_names: list[str]
    embedded: bool
    reward_ranges: list[tuple[float, float] | None] = field(default_factory=list)  # as each function declares
    code: RewardCode | None = None  # the user's reward modules, reloaded when changed and the operator resumes


def resolve_model(profile: RunProfile, progress: Callable[[str], None], dtype: str = "float32") -> tuple[str, bool]:
    """(model path or hub id, embedded?). Builds the embedded model, or converts a packaged
    pretrained one (`backend.training.pretrained`) in `dtype`, on first use."""
    src = in_workdir(profile, profile.model.source)
    if pretrained.is_packaged(src):
        path, _ = pretrained.ensure_packaged(src, home() / "models", dtype, progress)
        return str(path), False
    if src != "embedded":
        return src, False
    e = profile.model.embedded
    spec = TinyModelSpec(
        hidden_size=e.hidden_size,
        num_layers=e.num_layers,
        num_heads=e.num_heads,
        num_kv_heads=e.num_kv_heads,
        intermediate_size=e.intermediate_size,
        max_position_embeddings=max(64, profile.engine.max_model_len),
        seed=e.seed,
    )
    progress(f"building the embedded model {spec.key()} (cached under {home() / 'models'})")
    path, built = ensure_model(home() / "models", spec)
    progress(("built" if built else "using cached") + f" model at {path}")
    return str(path), True


def in_workdir(profile: RunProfile, spec: str) -> str:
    """`spec` as a path from the run's workdir when it is a relative path that exists there
    (a dataset file, a model directory); anything else (`module:function`, a hub id) as is."""
    wd = profile.run.workdir
    if not wd or ":" in spec or Path(spec).is_absolute():
        return spec
    candidate = Path(wd) / spec
    return str(candidate) if candidate.exists() else spec


def task_import_path(profile: RunProfile) -> None:
    """Task modules (`module:function`) import from the run's workdir, as they did at start."""
    import sys

    wd = profile.run.workdir
    if wd and wd not in sys.path:
        sys.path.insert(0, wd)


def resolve_dtype(profile: RunProfile, device: str) -> str:
    if profile.model.dtype != "auto":
        return profile.model.dtype
    return "float32" if device == "cpu" else "bfloat16"


def load_task(profile: RunProfile, recorder: RewardRecorder) -> TaskParts:
    t = profile.task
    task_import_path(profile)
    embedded = not t.reward_funcs and not t.dataset
    if t.reward_funcs:
        funcs = [load_callable(s) for s in t.reward_funcs]
        weights = list(t.reward_weights or [1.0] * len(funcs))
    else:
        funcs = list(demo_task.REWARD_FUNCS)
        weights = list(t.reward_weights or demo_task.REWARD_WEIGHTS)
    if t.dataset:
        ds = load_dataset_spec(in_workdir(profile, t.dataset))
        check_rows(len(ds), profile.training.prompts_per_step, t.dataset)
    else:
        ds = demo_task.dataset(n=max(4096, profile.training.prompts_per_step * 64), seed=profile.run.seed)
    ranges = [declared_range(f, spec) for f, spec in zip(funcs, t.reward_funcs or [""] * len(funcs))]
    wrapped = [recorder.wrap(f, bounded=bool(t.reward_funcs)) for f in funcs]  # the embedded task's run inline
    names = [w.__name__ for w in wrapped]
    return TaskParts(dataset=ds, reward_funcs=wrapped, reward_weights=weights, reward_names=names, embedded=embedded,
                     reward_ranges=ranges, code=RewardCode(t.reward_funcs, wrapped) if t.reward_funcs else None)


def load_policy(model_path: str, dtype: str, device: str):
    """The trainer's policy in `dtype` (`training.policy_dtype`: float32 by default, as TRL's
    GRPOTrainer loads a model path; with `bf16=True` it trains under bf16 autocast on GPU).
    The engine's dtype is a separate choice: weight syncs cast (`weight_sync.state_tensors`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    if device == "cuda":
        model = model.to("cuda")
    # from_pretrained returns the model in eval mode. TRL files each step's metrics under
    # "train" or "eval" by `trainer.model.training`; the trainer's own `.train()` reaches this
    # module only where it wraps it whole, and a regionally compiled update (COMPILE_ENV) calls
    # it on a copy: the rewards were then filed as eval and the step reported none
    model.train()
    return model, tokenizer


def supervised_warmup(
    model, tokenizer, steps: int, lr: float, seed: int, on_step: Callable[[int, float], None], correct_fraction: float = 0.0
) -> None:
    """A few supervised steps on correct examples of the embedded task (shown as a phase)."""
    import torch

    if steps <= 0:
        return
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    examples = demo_task.warmup_examples(steps * 32, seed=seed + 1, correct_fraction=correct_fraction)
    for i in range(steps):
        chunk = examples[i * 32 : (i + 1) * 32]
        ids, labels = [], []
        for prompt, answer in chunk:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(x) for x in ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
        label_t = torch.tensor([y + [-100] * (width - len(y)) for y in labels], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=label_t).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        on_step(i + 1, float(loss.detach()))


# accelerate reads its torch.compile options from the environment when the trainer builds its
# Accelerator (transformers passes only the backend and the mode). Left to torch's defaults, the
# first update compiles for that step's exact shapes and the first step with another sequence
# length (completions shorten as the policy learns) compiles the whole forward and backward
# again: on one H200, SmolLM2's step 12 took 102 s. Dynamic shapes from the start compile once
# for every length; regional compilation compiles one decoder layer and reuses it for the others.
COMPILE_ENV = {"ACCELERATE_DYNAMO_USE_DYNAMIC": "true", "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "true"}


#: the values accelerate's `str_to_bool` takes (any case); anything else fails inside the trainer's set-up
TRUE_WORDS = frozenset({"y", "yes", "t", "true", "on", "1"})
FALSE_WORDS = frozenset({"n", "no", "f", "false", "off", "0"})


def compile_env_problem(environ: dict | None = None) -> str:
    """A user's value for a COMPILE_ENV variable that accelerate would refuse, named ("" if none)."""
    import os

    env = os.environ if environ is None else environ
    for key in COMPILE_ENV:
        if key in env and env[key].strip().lower() not in TRUE_WORDS | FALSE_WORDS:
            return (f"{key}={env[key]!r} in the environment: accelerate takes one of "
                    f"{', '.join(sorted(TRUE_WORDS | FALSE_WORDS))} (it sets how trl.torch_compile compiles)")
    return ""


def compile_once_settings(environ: dict | None = None) -> dict[str, bool]:
    """Set COMPILE_ENV where the user has not set those variables; returns what now applies
    (variable -> on). A value accelerate would refuse raises, named."""
    import os

    env = os.environ if environ is None else environ
    if why := compile_env_problem(env):
        raise ValueError(why)
    for key, value in COMPILE_ENV.items():
        env.setdefault(key, value)
    return {key: env[key].strip().lower() in TRUE_WORDS for key in COMPILE_ENV}


def compile_note(on: dict[str, bool], resumed: bool) -> str:
    """What the operator is told at start-up about a compiled update, from what applies."""
    first = "the first update of this resumed run" if resumed else "step 1"
    head = (f"trl.torch_compile = true: the first update compiles the policy, so {first} takes longer "
            "(20 s to 2 min)")
    if on["ACCELERATE_DYNAMO_USE_DYNAMIC"]:
        shapes = ("; dynamic shapes: a new sequence length does not compile again, a new input variant "
                  "(a batch without padding, a new group size) compiles once, briefly")
    else:
        shapes = ("; ACCELERATE_DYNAMO_USE_DYNAMIC is off: each new longest sequence compiles the forward and "
                  "backward again")
    regional = ("; one decoder layer compiled for all (regional)" if on["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"]
                else "; the whole model compiled (regional compilation off)")
    return head + shapes + regional


def grpo_config(profile: RunProfile, output_dir: Path, device: str, reward_weights: list[float], max_steps: int):
    from trl import GRPOConfig

    s, t = profile.sampling, profile.training
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        # one generation of prompts × G per step, its update in `micro_batches` passes, one optimizer step
        per_device_train_batch_size=t.prompts_per_step * s.num_generations // t.micro_batches,
        gradient_accumulation_steps=t.micro_batches,
        steps_per_generation=t.micro_batches,
        num_generations=s.num_generations,
        max_completion_length=s.max_tokens,
        temperature=s.temperature,
        learning_rate=t.learning_rate,
        lr_scheduler_type="constant",
        beta=t.beta,
        max_steps=max_steps,
        max_grad_norm=t.max_grad_norm,
        seed=profile.run.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=device != "cpu",
        gradient_checkpointing=False,
        reward_weights=reward_weights,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(profile.trl)
    if t.overlap:
        check_overlap(kwargs)
    return GRPOConfig(**kwargs)


def check_overlap(kwargs: dict[str, Any]) -> None:
    """`training.overlap` generates the next step's rollout during this step's update: it needs
    one generation per optimizer step, and TRL's importance-sampling correction on."""
    # (steps_per_generation = gradient_accumulation_steps = training.micro_batches: one generation
    # per optimizer step whatever the number of update passes)
    once = {"num_iterations": 1}
    bad = [f"{k} = {kwargs[k]}" for k, ok in once.items() if kwargs.get(k) not in (None, ok)]
    if bad:
        raise ValueError(f"training.overlap needs one generation per optimizer step; the [trl] table sets {', '.join(bad)}: "
                         "remove them or set training.overlap = false")
    if kwargs.get("vllm_importance_sampling_correction") is False:
        raise ValueError("training.overlap trains on rollouts one weight version old and needs TRL's importance-sampling "
                         "correction: remove vllm_importance_sampling_correction = false from [trl] or set training.overlap = false")
