"""Events: facts the backend reports. Frozen, discriminated by `kind`.

Every event carries `seq` (its contiguous position in the run's event log, assigned by
the run store; -1 before it is stored) and `ts` (unix seconds when it was emitted).
Bulk data is batched: one `SampleGroup` holds a whole group of completions.
"""

from __future__ import annotations

import time
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from backend.protocol.wire import WIRE

RunState = Literal["starting", "running", "pausing", "paused", "stopping", "finished", "failed"]
Severity = Literal["info", "warning", "critical"]


class _Event(BaseModel):
    model_config = WIRE
    seq: int = -1
    ts: float = Field(default_factory=time.time)


class Hello(_Event):
    """The server's first frame on a connection: the protocol version it speaks, the run and the
    newest sequence number in its log. Clients do not send a hello; they answer with `subscribe`
    (and a TCP connection gets a blank hello until its subscribe carried the run's token)."""

    kind: Literal["hello"] = "hello"
    protocol: int
    run_id: str = ""
    role: Literal["server", "client"] = "server"
    last_seq: int = -1


class RunStarted(_Event):
    kind: Literal["run_started"] = "run_started"
    run_id: str
    profile: str
    profile_data: dict[str, Any] = Field(default_factory=dict)
    model: str
    task: str
    engine: str
    reward_functions: list[str] = Field(default_factory=list)
    reward_weights: list[float] = Field(default_factory=list)  # one per reward function, as TRL weighs them
    max_prompt_tokens: int = 0  # the longest prompt (of the first 5000 checked at start): max_tokens + it ≤ max_model_len
    # one per reward function: the [low, high] it declares (`func.reward_range`), None if it declares none
    reward_ranges: list[tuple[float, float] | None] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    pid: int = 0


class StateChanged(_Event):
    kind: Literal["state_changed"] = "state_changed"
    state: RunState
    reason: str = ""
    step: int = 0


class RunResumed(_Event):
    """A new backend process continues the run from a checkpoint. Steps after `step` that the
    log already holds belong to the timeline that was lost (a crash); they are run again."""

    kind: Literal["run_resumed"] = "run_resumed"
    step: int
    checkpoint: str
    previous_pid: int = 0
    checksum: str = ""


class Progress(_Event):
    """Long work before or between steps (engine start, model build, warm-up)."""

    kind: Literal["progress"] = "progress"
    stage: str
    message: str
    current: int = 0
    total: int = 0


class Completion(BaseModel):
    model_config = WIRE
    text: str
    rewards: dict[str, float | None]
    reward: float
    advantage: float
    length: int
    truncated: bool
    # the token view (a sample of groups per step, `telemetry.token_view_groups`): each sampled
    # token's text, the engine's sampling log-prob of it, and the trainer's where measured
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    trainer_logprobs: list[float] = Field(default_factory=list)


class SampleGroup(_Event):
    kind: Literal["sample_group"] = "sample_group"
    step: int
    group: int
    prompt: str
    completions: list[Completion]
    weight_version: int
    reward_mean: float
    reward_std: float
    # weight versions between the weights that sampled this group (`weight_version`) and the
    # weights its loss was computed with: 0 on-policy; at most 1 with `training.overlap`
    staleness: int = 0


class ProbeOutput(BaseModel):
    model_config = WIRE
    prompt: str
    output: str  # the greedy completion
    rewards: dict[str, float | None]  # per reward function; None where it could not score this prompt
    reward: float | None  # weighted total (None: no function could score it)
    length: int
    truncated: bool


class PolicyProbe(_Event):
    """The run's fixed probe prompts decoded greedily by the engine at one weight version
    (the initial weights, then every `telemetry.probe_every` steps): what the policy says
    now, in words. Two probes of the same version give the same outputs."""

    kind: Literal["policy_probe"] = "policy_probe"
    step: int
    weight_version: int
    probes: list[ProbeOutput]
    duration_s: float = 0.0
    unscored: dict[str, str] = Field(default_factory=dict)  # reward function -> why it gave no reward (for some prompt)


class TryResult(_Event):
    """The answer to a `try` command: the engine's completions for the operator's prompt,
    sampled between steps at `weight_version` with `params`, scored by the run's reward
    functions where they could be (advantage is 0: there is no group baseline)."""

    kind: Literal["try_result"] = "try_result"
    command_id: str
    step: int
    weight_version: int
    prompt: str
    params: dict[str, Any] = Field(default_factory=dict)
    completions: list[Completion]
    duration_s: float = 0.0
    unscored: dict[str, str] = Field(default_factory=dict)  # reward function -> why it gave no reward


#: a step's compile time worth showing (headless line, log, throughput panel); below it, none is shown
COMPILE_SHOWN_S = 0.05


class StepTimes(BaseModel):
    model_config = WIRE
    generate: float = 0.0
    score: float = 0.0
    train: float = 0.0
    sync: float = 0.0
    total: float = 0.0
    compile: float = 0.0  # of `train`: seconds torch.compile spent compiling after the rollout (the update)


class StepMetrics(_Event):
    kind: Literal["step_metrics"] = "step_metrics"
    step: int
    loss: float | None = None
    kl: float | None = None
    grad_norm: float | None = None
    learning_rate: float | None = None
    reward_mean: float
    reward_std: float
    rewards_by_function: dict[str, float] = Field(default_factory=dict)
    frac_reward_zero_std: float = 0.0
    truncated_ratio: float = 0.0
    clip_ratio: float | None = None
    entropy: float | None = None
    completion_length_mean: float = 0.0
    # trainer-engine agreement: |trainer log-prob - engine sampling log-prob| over the sampled
    # tokens (TRL's sampling/sampling_logp_difference), on the steps where it was measured
    logprob_diff_mean: float | None = None
    logprob_diff_max: float | None = None
    # mean total reward of completions that ended on their own vs hit max_tokens (None: none such)
    reward_finished: float | None = None
    reward_truncated: float | None = None
    # why this step's update was skipped (a failing reward function, NaN/Inf): its rewards are
    # not a measurement of the policy and charts leave the step out ("" = a normal step)
    update_skipped: str = ""
    # in-group diversity (early collapse shows here before the reward flattens): mean share of
    # distinct completions per group, mean pairwise token 3-gram Jaccard overlap within groups,
    # mean share of repeated 3-grams inside a completion
    distinct_ratio: float | None = None
    unsolved_distinct_ratio: float | None = None  # the same over groups below the batch's best group mean
    group_overlap: float | None = None
    repetition: float | None = None
    # reward-hacking signals: Pearson correlation of total reward with completion length over
    # the batch; mean of the profile's ground-truth function (`task.ground_truth`)
    reward_length_corr: float | None = None
    ground_truth_mean: float | None = None
    # this step's groups that show a signal most (signal -> group indices), for alerts' evidence
    evidence: dict[str, list[int]] = Field(default_factory=dict)
    times: StepTimes = Field(default_factory=StepTimes)
    tokens_per_s: float = 0.0
    samples_per_s: float = 0.0
    weight_version: int = 0
    # overlap (`training.overlap`): the rollout's staleness in weight versions (0 = sampled with
    # the weights the loss used), whether it was generated during the previous step's update,
    # why not when overlap is on ("" = it was, or overlap is off), and the engine seconds it
    # took behind that update (`times.generate` is then only what the step waited for it)
    staleness: int = 0
    prefetched: bool = False
    overlap_fallback: str = ""
    generate_hidden_s: float = 0.0
    # TRL's importance-sampling correction (trainer log-prob / engine sampling log-prob; TRL's
    # sampling/importance_sampling_ratio/min|mean|max, per sequence in its default
    # "sequence_mask" mode, masked ratios counted as 0) and the share of sequences (tokens in
    # token_* modes) it masked or truncated; None where the correction is off
    is_ratio_min: float | None = None
    is_ratio_mean: float | None = None
    is_ratio_max: float | None = None
    is_clipped_frac: float | None = None


class GpuInfo(BaseModel):
    model_config = WIRE
    index: int
    name: str
    util_pct: float
    mem_used_mb: float
    mem_total_mb: float
    power_w: float | None = None
    temperature_c: float | None = None
    node: str = "local"


class GpuStats(_Event):
    kind: Literal["gpu_stats"] = "gpu_stats"
    available: bool
    reason: str = ""
    gpus: list[GpuInfo] = Field(default_factory=list)


class HostMemory(_Event):
    """The host's memory at a step boundary (`step`: the steps completed): what the run's processes
    hold, what the step just ended needed beyond what the backend held before it, what the next
    step is expected to need beyond what it holds now (`backend.telemetry.host.NextStepNeed`), and
    what the machine, or the container's memory limit where that is tighter (`limit`), has left.
    The kernel kills a process that asks for more than is left, without a word: this is what
    the console shows about it beforehand, and what `ls` reads after a run was killed."""

    kind: Literal["host_memory"] = "host_memory"
    step: int
    rss_mb: float
    step_need_mb: float | None = None  # None: not known (the first boundary, or a kernel without a resettable peak)
    last_step_mb: float | None = None
    available_mb: float
    total_mb: float
    limit: Literal["machine", "cgroup"] = "machine"


class WeightsSynced(_Event):
    kind: Literal["weights_synced"] = "weights_synced"
    version: int
    step: int
    duration_s: float
    bytes: int
    checksum: str
    verified: bool
    method: str = ""
    detail: str = ""


class ParamsApplied(_Event):
    """A SetParams took effect at a step boundary; `params` is the full live set after it."""

    kind: Literal["params_applied"] = "params_applied"
    command_id: str
    step: int
    changed: dict[str, Any]
    params: dict[str, Any]


class CommandResult(_Event):
    kind: Literal["command_result"] = "command_result"
    command_id: str
    command: str
    status: Literal["accepted", "rejected", "applied", "failed"]
    reason: str = ""
    step: int = 0


class CheckpointSaved(_Event):
    kind: Literal["checkpoint_saved"] = "checkpoint_saved"
    step: int
    path: str
    duration_s: float


class Alert(_Event):
    """A rule fired. A *lasting* alert is a condition over the metrics (zero_std, truncation,
    ...): raised once when it starts (`state="raised"`, `since` = that step) and followed by
    one `state="cleared"` event when it has not held for a few steps; it is raised again only
    after that. Other alerts (engine_dead, reward_failed, disk_low, ...) are single events."""

    kind: Literal["alert"] = "alert"
    rule: str
    severity: Severity
    message: str
    step: int = 0
    metric: str = ""
    value: float | None = None
    threshold: float | None = None
    suggestion: str = ""
    state: Literal["raised", "cleared"] = "raised"
    lasting: bool = False
    since: int | None = None  # the step a lasting alert was raised at
    evidence: list[list[int]] = Field(default_factory=list)  # [step, group] pairs that show it


class LogLine(_Event):
    kind: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str


class ControlStatus(_Event):
    """To one connection, never logged: whether it controls the run, and who does."""

    kind: Literal["control"] = "control"
    role: Literal["controller", "viewer"]
    holder: str = ""  # the controlling client's description ("" = nobody)
    reason: str = ""


class ErrorReply(_Event):
    """Sent on a connection that sent a frame the server could not accept."""

    kind: Literal["error"] = "error"
    message: str


Event = Annotated[
    Union[
        Hello,
        RunStarted,
        StateChanged,
        RunResumed,
        Progress,
        SampleGroup,
        StepMetrics,
        GpuStats,
        HostMemory,
        WeightsSynced,
        ParamsApplied,
        CommandResult,
        CheckpointSaved,
        Alert,
        LogLine,
        ControlStatus,
        ErrorReply,
        PolicyProbe,
        TryResult,
    ],
    Field(discriminator="kind"),
]

#: every event type, in the union's order (derived: one list to keep)
EVENT_TYPES: tuple[type[_Event], ...] = tuple(typing.get_args(typing.get_args(Event)[0]))
