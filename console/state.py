"""Run state for the console: bounded ring buffers fed by protocol events, plus derived views.

Pure Python (no Textual import): the app's reader worker calls `RunState.apply(event)` for
every event; screens read from it on their repaint tick. Every collection is bounded, so a
flood of events costs CPU, never unbounded memory. Time shown is derived from event `ts`
only (never the wall clock), which keeps replays and snapshot tests deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from backend.protocol.events import (
    COMPILE_SHOWN_S,
    Alert,
    CheckpointSaved,
    CommandResult,
    ControlStatus,
    ErrorReply,
    GpuStats,
    HostMemory,
    Hello,
    LogLine,
    ParamsApplied,
    PolicyProbe,
    Progress,
    RunResumed,
    RunStarted,
    SampleGroup,
    StateChanged,
    StepMetrics,
    TryResult,
    WeightsSynced,
)
from backend.protocol.params import BY_NAME, LIVE_PARAMS, param_range
from console.prompt_curves import PromptTracker

SORTS: tuple[str, ...] = ("newest", "abs_advantage", "lowest_mean")
SORT_LABELS = {"newest": "newest", "abs_advantage": "|adv| desc", "lowest_mean": "mean asc"}
_RESYNC_KINDS = ("resync", "resync_weights")


#: said of a condition that was still raised when its backend ended: the resumed backend
#: watches it afresh (and raises it again, as a new row, if it still holds)
OPEN_AT_RESUME = "(still open when its backend ended; watched afresh since the resume)"


@dataclass(frozen=True)
class LogEntry:
    index: int  # position in the whole log (monotonic), so a view can append only what's new
    ts: float
    level: str  # "info" | "warning" | "critical" | "alert-info" | "alert-warning" | "alert-critical"
    text: str
    kind: str = "other"  # one of LOG_KINDS: what the events log's kind filter goes by


#: what each event kind counts as in the events log's filter
LOG_KINDS: dict[str, str] = {
    "command_result": "command", "params_applied": "command", "control": "command", "try_result": "command",
    "state_changed": "state", "run_started": "state", "run_resumed": "state", "hello": "state", "progress": "state",
    "alert": "alert",
    "checkpoint_saved": "checkpoint",
    "weights_synced": "sync",
    "step_metrics": "step",
    "sample_group": "group",
    "error": "problem",
}

#: the events log's filters, in the order its key cycles them: (name, kinds shown; None = all).
#: The first is the default: what an operator acts on, without the per-step and per-group lines.
LOG_FILTERS: tuple[tuple[str, frozenset[str] | None], ...] = (
    ("operator", frozenset({"command", "state", "alert", "checkpoint", "problem"})),
    ("all", None),
    ("commands", frozenset({"command"})),
    ("alerts", frozenset({"alert"})),
    ("checkpoints & syncs", frozenset({"checkpoint", "sync"})),
)


def gb(mb: float | None) -> str:
    """Megabytes as an operator reads host memory: '9.1 GB', '512 MB'."""
    if mb is None:
        return "?"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def log_kind(event: Any) -> str:
    if isinstance(event, LogLine):  # the backend's own lines: warnings and errors matter
        return "problem" if event.level in ("warning", "error") else "other"
    return LOG_KINDS.get(getattr(event, "kind", ""), "other")


@dataclass(frozen=True)
class Marker:
    step: int
    kind: str  # "params" | "resync" | "pause" | "resume" | "alert"
    label: str


#: the charts' windows, in the order `z` cycles them: every held step, then the last N steps
CHART_WINDOWS: tuple[int | None, ...] = (None, 200, 50)


def chart_windows(held: int) -> list[int | None]:
    """The windows worth offering with `held` steps: a window as long as the history is none."""
    return [w for w in CHART_WINDOWS if w is None or w < held]


def window_start(steps: list[int], window: int | None) -> int | None:
    """The first step a window of the last `window` steps shows (None: every step held)."""
    if window is None or not steps:
        return None
    return steps[-1] - window + 1


def window_span(window: int | None, shown: int, held: int, capacity: int | None) -> str:
    """What a chart's title says about its window: 'last 50 steps', 'all 24 steps', or, when
    the ring holds only the newest steps of a longer run, 'newest 2,000 steps'."""
    if window is not None:
        return f"last {window} steps"
    if capacity is not None and held >= capacity:
        return f"newest {held:,} steps"
    return f"all {shown:,} steps"


@dataclass
class PendingCommand:
    command_id: str
    kind: str
    changes: dict[str, Any]
    status: str = "sent"  # "sent" -> "accepted"
    order: int = 0


@dataclass(frozen=True)
class Rejection:
    command_id: str
    command: str
    status: str  # "rejected" | "failed" | "send-failed" | "unanswered"
    reason: str
    changes: dict[str, Any]
    order: int


def _registry_max(name: str) -> float:
    return next((m.le for m in BY_NAME[name].info.metadata if hasattr(m, "le")), float("inf"))


# -- group helpers ---------------------------------------------------------------------

def max_abs_advantage(group: SampleGroup) -> float:
    return max((abs(c.advantage) for c in group.completions), default=0.0)


def truncated_count(group: SampleGroup) -> int:
    return sum(1 for c in group.completions if c.truncated)


def best_completion(group: SampleGroup):
    return max(group.completions, key=lambda c: c.reward, default=None)


def is_zero_std(group: SampleGroup) -> bool:
    return abs(group.reward_std) < 1e-12


def filter_groups(newest_first: Any, *, query: str = "", zero_std: bool = False, truncated: bool = False,
                  sort: str = "newest", only: frozenset[tuple[int, int]] | None = None) -> list[SampleGroup]:
    """Groups (given newest first) for the samples screen. `zero_std`/`truncated` keep only such
    groups; `only`: only these (step, group) pairs (an alert's evidence); `query`: in the prompt
    or a completion (case-insensitive)."""
    needle = query.strip().casefold()
    out = []
    for group in newest_first:
        if only is not None and (group.step, group.group) not in only:
            continue
        if zero_std and not is_zero_std(group):
            continue
        if truncated and not truncated_count(group):
            continue
        if needle and needle not in group.prompt.casefold() and not any(needle in c.text.casefold() for c in group.completions):
            continue
        out.append(group)
    if sort == "abs_advantage":
        out.sort(key=max_abs_advantage, reverse=True)
    elif sort == "lowest_mean":
        out.sort(key=lambda g: g.reward_mean)
    elif sort != "newest":
        raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    return out


def one_line(text: str, width: int | None = None) -> str:
    flat = " ".join(text.replace("\n", " ⏎ ").split())
    if width is not None and len(flat) > width:
        return flat[: max(width - 1, 0)] + "…"
    return flat


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


LIVE_STATES = ("starting", "running", "pausing", "paused", "stopping")  # a backend is working on the run


def fmt_elapsed(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def describe(event: Any) -> tuple[str, str]:
    """A human one-line rendering of an event, and its level."""
    if isinstance(event, Alert):
        if event.state == "cleared":
            return f"CLEARED [{event.rule}] step {event.step}: {event.message}", "info"
        tail = f" — {event.suggestion}" if event.suggestion else ""
        return f"ALERT {event.severity} [{event.rule}] step {event.step}: {event.message}{tail}", f"alert-{event.severity}"
    if isinstance(event, SampleGroup):
        trunc = truncated_count(event)
        return (
            f"step {event.step} group {event.group}: reward {event.reward_mean:.3f}±{event.reward_std:.3f}, "
            f"G={len(event.completions)}" + (f", {trunc} truncated" if trunc else "") + f" — {one_line(event.prompt, 40)}",
            "info",
        )
    if isinstance(event, StepMetrics):
        return (
            f"step {event.step}: reward {event.reward_mean:.3f}±{event.reward_std:.3f} loss {fmt_num(event.loss, 4)} "
            f"kl {fmt_num(event.kl, 4)} zero-std {event.frac_reward_zero_std:.0%} trunc {event.truncated_ratio:.0%} "
            f"{event.times.total:.2f}s {event.tokens_per_s:.0f} tok/s"
            + (f" (compiling {event.times.compile:.1f}s)" if event.times.compile >= COMPILE_SHOWN_S else "")
            + (f" Δlogp {event.logprob_diff_mean:.2g}" if event.logprob_diff_mean is not None else "")
            + (f" reward ended/cut {fmt_num(event.reward_finished, 2)}/{fmt_num(event.reward_truncated, 2)}"
               if event.reward_truncated is not None else ""),
            "info",
        )
    if isinstance(event, WeightsSynced):
        unchecked = not event.verified and "not canary-checked" in event.method  # a sync that skipped the check
        check = "verified" if event.verified else "unchecked" if unchecked else "NOT VERIFIED"
        detail = f" — {event.detail}" if event.detail else ""
        return (
            f"weights v{event.version} synced at step {event.step} in {event.duration_s:.2f}s "
            f"({event.bytes / 1e6:.1f} MB{', ' + event.method if event.method else ''}) {check} {event.checksum[:12]}{detail}",
            "info" if event.verified or unchecked else "warning",
        )
    if isinstance(event, CommandResult):
        text = f"command {event.command} [{event.command_id}] {event.status}"
        if event.reason:
            text += f": {event.reason}"
        return text, "warning" if event.status in ("rejected", "failed") else "info"
    if isinstance(event, ParamsApplied):
        changed = ", ".join(f"{k}={v}" for k, v in event.changed.items())
        return f"params applied at step {event.step}: {changed} [{event.command_id}]", "info"
    if isinstance(event, StateChanged):
        reason = f" ({event.reason})" if event.reason else ""
        return f"state → {event.state}{reason} at step {event.step}", "critical" if event.state == "failed" else "info"
    if isinstance(event, Progress):
        count = f" ({event.current}/{event.total})" if event.total else ""
        return f"{event.stage}: {event.message}{count}", "info"
    if isinstance(event, GpuStats):
        if not event.available:
            return f"gpu: none ({event.reason})", "info"
        return "gpu: " + "; ".join(f"#{g.index} {g.util_pct:.0f}% {g.mem_used_mb:.0f}/{g.mem_total_mb:.0f} MB" for g in event.gpus), "info"
    if isinstance(event, HostMemory):
        need = f", the step needed +{gb(event.step_need_mb)}" if event.step_need_mb is not None else ""
        where = " (container limit)" if event.limit == "cgroup" else ""
        return (f"host memory at step {event.step}: the run holds {gb(event.rss_mb)}{need}; "
                f"{gb(event.available_mb)} free of {gb(event.total_mb)}{where}", "info")
    if isinstance(event, RunStarted):
        return f"run {event.run_id} started: profile {event.profile}, model {event.model}, task {event.task}, engine {event.engine}", "info"
    if isinstance(event, RunResumed):
        return (f"run resumed from step {event.step} ({event.checkpoint}); later steps in the log before this "
                f"are replaced by the resumed ones", "warning")
    if isinstance(event, CheckpointSaved):
        return f"checkpoint at step {event.step} → {event.path} ({event.duration_s:.1f}s)", "info"
    if isinstance(event, LogLine):
        level = {"warning": "warning", "error": "critical"}.get(event.level, "info")
        return f"{event.level}: {event.message}", level
    if isinstance(event, ControlStatus):
        who = f"{event.holder} controls the run" if event.holder else "nobody controls the run"
        text = "this console controls the run" if event.role == "controller" else f"read-only: {who}"
        return text + (f" ({event.reason})" if event.reason else ""), "info" if event.role == "controller" else "warning"
    if isinstance(event, PolicyProbe):
        scored = [p.reward for p in event.probes if p.reward is not None]
        mean = f", mean reward {sum(scored) / len(scored):.3f}" if scored else ""
        return (f"probe at weights v{event.weight_version} (step {event.step}): {len(event.probes)} prompts{mean}, "
                f"{event.duration_s:.2f}s", "info")
    if isinstance(event, TryResult):
        rewards = [c.reward for c in event.completions]
        mean = f", mean reward {sum(rewards) / len(rewards):.3f}" if rewards else ""
        return (f"try [{event.command_id}] at weights v{event.weight_version} (step {event.step}): "
                f"{len(event.completions)} completion(s){mean} — {one_line(event.prompt, 40)}", "info")
    if isinstance(event, ErrorReply):
        return f"backend refused a frame: {event.message}", "critical"
    if isinstance(event, Hello):
        return f"connected: protocol {event.protocol}, run {event.run_id}", "info"
    return f"{getattr(event, 'kind', type(event).__name__)}", "info"


class RunState:
    """Everything the console knows about one run, bounded."""

    def __init__(
        self,
        *,
        max_steps: int = 2000,
        max_groups: int = 500,
        max_alerts: int = 200,
        max_log: int = 1000,
        max_markers: int = 500,
        max_probes: int = 200,
        max_tries: int = 50,
    ) -> None:
        self.run_id = ""
        self.profile = ""
        self.model = ""
        self.task = ""
        self.engine = ""
        self.reward_functions: list[str] = []
        self.max_steps = 0  # the run's run.max_steps, from RunStarted (0: unknown)
        self.max_model_len = 0  # the run's engine.max_model_len, from RunStarted (0: unknown)
        self.max_prompt_tokens = 0  # the run's longest prompt in tokens, from RunStarted (0: unknown)
        self.has_ref_model: bool | None = None  # a reference model was loaded (None: unknown)
        self.reward_weights: dict[str, float] = {}  # function -> its weight in the total reward
        self.reward_ranges: dict[str, tuple[float, float]] = {}  # function -> the range it declares (RunStarted)
        self.state = "unknown"
        self.state_reason = ""
        self.next_step = ""  # what continues an ended run, as `rl-console ls` says it (set by `settle`)
        self.step = 0
        self.progress: Progress | None = None
        self.steps: deque[StepMetrics] = deque(maxlen=max_steps)
        self.groups: deque[SampleGroup] = deque(maxlen=max_groups)
        self.groups_by_step: dict[int, list[SampleGroup]] = {}
        self.groups_total = 0
        self.gpu: GpuStats | None = None
        self.host: HostMemory | None = None  # the newest host_memory: what the run holds, what is left
        self.last_sync: WeightsSynced | None = None
        self.weight_version = 0
        self.last_checkpoint: CheckpointSaved | None = None
        self.alerts: deque[Alert] = deque(maxlen=max_alerts)
        self.active_alerts: dict[str, Alert] = {}  # rule -> its raised lasting alert, until cleared
        self.log: deque[LogEntry] = deque(maxlen=max_log)
        # the same entries, one ring per kind (`LOG_KINDS`): a filtered view of the events log
        # keeps its own history (the commands, alerts and state changes of the whole run), not
        # what is left of them in the last `max_log` events of a fast run (a few seconds)
        self.log_by_kind: dict[str, deque[LogEntry]] = {}
        self._max_log = max_log
        self.log_total = 0
        self.live_params: dict[str, Any] = {}
        self.pending: dict[str, PendingCommand] = {}
        self.rejections: deque[Rejection] = deque(maxlen=50)
        self.applied: dict[str, tuple[Any, int, int]] = {}  # field -> (value, step, order)
        self.markers: deque[Marker] = deque(maxlen=max_markers)
        self.sent_ids: deque[str] = deque(maxlen=500)
        self.first_ts: float | None = None  # the first and newest run event's time (not this connection's frames)
        self.last_ts: float | None = None
        self._ran_before = 0.0  # seconds the run's earlier backends ran (a resumed run starts a new one)
        self._backend_start: float | None = None  # when the newest backend began (RunStarted / RunResumed)
        self._resuming = False  # the last event was a RunResumed: its backend's RunStarted follows
        self.last_seq = -1
        self.events_seen = 0
        self.version = 0  # bumps on every change; views repaint only when it moved
        self.connection = "connecting"  # "connecting" | "live" | "disconnected" | "ended"
        self.connection_detail = ""
        self._resync_requested = False
        self.live_from: int | None = None  # first seq logged after this console connected (None: a replay or a feed)
        self.control_role = ""  # "controller" | "viewer" | "" (not told yet)
        self.control_holder = ""
        # policy probes and playground tries (the policy diff and playground screens)
        self.telemetry: dict[str, Any] = {}  # the profile's [telemetry] section, from RunStarted
        self.probes: deque[PolicyProbe] = deque(maxlen=max_probes)  # oldest first, one per weight version
        self.probe_baseline: PolicyProbe | None = None  # the first one (initial weights), kept past the ring
        self.tries: deque[TryResult] = deque(maxlen=max_tries)  # every console's tries, oldest first
        self.prompts = PromptTracker()  # per-prompt learning curves (console/prompt_curves.py)

    # -- connection -------------------------------------------------------------------
    def on_hello(self, hello: Hello) -> None:
        self.connection = "live"
        self.live_from = hello.last_seq + 1  # events from here on happen while this console watches
        self.run_id = self.run_id or hello.run_id
        self._add_log(hello.ts, *describe(hello), kind="state")
        self.version += 1

    def on_disconnect(self, reason: str = "", *, ended: bool = False, crashed: bool = False) -> None:
        """The event stream ended: the run ended (`ended`), its backend died (`crashed`: the
        run's state becomes "crashed", never a stale RUNNING), or the connection dropped."""
        self.connection = "ended" if ended else "disconnected"
        if crashed:
            self.state = "crashed"
        self.connection_detail = reason
        for pending in self.pending.values():  # nobody will answer these now
            self.rejections.append(Rejection(pending.command_id, pending.kind, "unanswered",
                                             "the connection closed before the backend answered", pending.changes, self.version))
        self.pending.clear()
        self._add_log(self.last_ts or 0.0, f"{'end of event log' if ended else 'disconnected'}{': ' + reason if reason else ''}",
                      "warning", kind="state")
        self.version += 1

    def settle(self, state: str, reason: str, next_step: str = "") -> None:
        """The run's end as its own log and lock tell it (`console.runs.info`, what `ls` says),
        once no backend hosts it: completed/stopped become "finished" with that reason, failed
        and crashed stay. Overrides a state the stream left behind (a start cut short, a
        connection that dropped before the last event)."""
        if state in ("completed", "stopped"):
            state, reason = "finished", (reason if reason.startswith(("completed", "stopped")) else f"{state}: {reason}")
        if state not in ("finished", "failed", "crashed"):
            return
        self.state, self.state_reason = state, reason
        self.next_step = next_step
        self._add_log(self.last_ts or 0.0, f"{state}: {reason}" + (f"; next: {next_step}" if next_step else ""),
                      "error" if state in ("failed", "crashed") else "information", kind="state")
        self.version += 1

    @property
    def connected(self) -> bool:
        return self.connection == "live"

    @property
    def ended(self) -> bool:
        """The run is over (completed, stopped, failed or crashed): no control can act on it."""
        return self.state in ("finished", "failed", "crashed")

    @property
    def lifecycle(self) -> str:
        """The run's state as an operator reads it: a finished run is `completed` (all its steps)
        or `stopped` (by an operator or a signal), as `rl-console ls` says."""
        if self.state == "finished":
            return "completed" if self.state_reason.startswith("completed") else "stopped"
        return self.state

    # -- commands sent by this console ----------------------------------------------------
    def record_sent(self, command: Any) -> None:
        self.sent_ids.append(command.id)
        changes = command.changes() if hasattr(command, "changes") else {}
        self.pending[command.id] = PendingCommand(command.id, command.kind, changes, order=self.version)
        self.version += 1

    def record_send_failed(self, command_id: str, reason: str) -> None:
        pending = self.pending.pop(command_id, None)
        if pending is not None:
            self.rejections.append(Rejection(command_id, pending.kind, "send-failed", reason, pending.changes, self.version))
        self.version += 1

    def is_ours(self, command_id: str) -> bool:
        return command_id in self.sent_ids

    # -- events ---------------------------------------------------------------------------
    def apply(self, event: Any) -> None:
        self.version += 1
        if not isinstance(event, ControlStatus):  # about this connection, not the run
            self.events_seen += 1
        if isinstance(event, Hello):
            self.on_hello(event)
            return
        if event.seq >= 0:
            self.last_seq = event.seq
        if not isinstance(event, ControlStatus):  # this connection's frame, sent at attach: not the run's time
            self._clock(event)
        self._add_log(event.ts, *describe(event), kind=log_kind(event))
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, ev: RunStarted) -> None:
        self.run_id, self.profile, self.model, self.task, self.engine = ev.run_id, ev.profile, ev.model, ev.task, ev.engine
        self.reward_functions = list(ev.reward_functions)
        self.reward_weights = dict(zip(ev.reward_functions, ev.reward_weights))
        self.reward_ranges = {n: (float(r[0]), float(r[1])) for n, r in zip(ev.reward_functions, ev.reward_ranges) if r}
        self.prompts.bounds = self.reward_bounds()  # "always solved" means at the top of what the task can pay
        self.live_params = dict(ev.params)
        run = (ev.profile_data or {}).get("run") or {}
        self.max_steps = int(run.get("max_steps") or 0)
        self.telemetry = dict((ev.profile_data or {}).get("telemetry") or {})
        engine = (ev.profile_data or {}).get("engine") or {}
        self.max_model_len = int(engine.get("max_model_len") or 0)
        self.max_prompt_tokens = ev.max_prompt_tokens
        training = (ev.profile_data or {}).get("training") or {}
        beta = training.get("beta")
        # the backend loads a reference model only when the run starts with beta > 0
        self.has_ref_model = None if beta is None else float(beta) > 0

    def _on_run_resumed(self, ev: RunResumed) -> None:
        """A new backend continues from a checkpoint: the steps after it that this view holds
        belong to the lost timeline and are about to be run again, so drop them."""
        keep = [m for m in self.steps if m.step <= ev.step]
        self.steps = deque(keep, maxlen=self.steps.maxlen)
        # the weights of the lost steps are gone too: the version is the checkpoint's until the
        # new backend's first push says otherwise (not the lost timeline's newest, far ahead)
        self.weight_version = max((m.weight_version for m in keep), default=0)
        self.last_sync = None
        groups = [g for g in self.groups if g.step <= ev.step]
        self.groups = deque(groups, maxlen=self.groups.maxlen)
        self.groups_by_step = {}
        for g in groups:
            self.groups_by_step.setdefault(g.step, []).append(g)
        self.markers = deque((m for m in self.markers if m.step <= ev.step), maxlen=self.markers.maxlen)
        self.probes = deque((p for p in self.probes if p.step <= ev.step), maxlen=self.probes.maxlen)
        self.prompts.drop_after(ev.step)
        # alerts of the lost steps go (the events log keeps them); the new backend watches the
        # conditions afresh: one that still holds is raised again, so none stays active from
        # the old backend (it would never be cleared: that backend is gone)
        open_then = {id(a) for a in self.active_alerts.values()}
        self.alerts = deque((a.model_copy(update={"message": f"{a.message} {OPEN_AT_RESUME}"}) if id(a) in open_then else a
                             for a in self.alerts if a.step <= ev.step), maxlen=self.alerts.maxlen)
        self.active_alerts = {}
        self.step = ev.step
        self.pending.clear()
        self._mark(ev.step, "resume", "R")

    def _on_control(self, ev: ControlStatus) -> None:
        self.control_role, self.control_holder = ev.role, ev.holder

    def _on_state_changed(self, ev: StateChanged) -> None:
        self.state, self.state_reason = ev.state, ev.reason
        self.step = max(self.step, ev.step)
        if ev.state == "paused":
            self._mark(ev.step or self.step, "pause", "‖")

    def _on_progress(self, ev: Progress) -> None:
        self.progress = ev

    def _on_sample_group(self, ev: SampleGroup) -> None:
        if len(self.groups) == self.groups.maxlen:
            old = self.groups[0]
            bucket = self.groups_by_step.get(old.step)
            if bucket is not None:
                bucket.remove(old)
                if not bucket:
                    del self.groups_by_step[old.step]
        self.groups.append(ev)
        self.groups_by_step.setdefault(ev.step, []).append(ev)
        self.groups_total += 1  # (`step` counts completed steps, as `status` does: this one is still training)
        self.prompts.add(ev)

    def _on_step_metrics(self, ev: StepMetrics) -> None:
        self.steps.append(ev)
        self.step = max(self.step, ev.step)
        self.weight_version = max(self.weight_version, ev.weight_version)
        for name in ev.rewards_by_function:
            if name not in self.reward_functions:
                self.reward_functions.append(name)

    def _on_gpu_stats(self, ev: GpuStats) -> None:
        self.gpu = ev

    def _on_host_memory(self, ev: HostMemory) -> None:
        self.host = ev

    def _on_weights_synced(self, ev: WeightsSynced) -> None:
        self.last_sync = ev
        self.weight_version = max(self.weight_version, ev.version)
        if self._resync_requested or "resync" in f"{ev.method} {ev.detail}".lower():
            self._resync_requested = False
            self._mark(ev.step, "resync", "W")

    def _on_params_applied(self, ev: ParamsApplied) -> None:
        self.live_params = dict(ev.params)
        for name, value in ev.changed.items():
            self.applied[name] = (value, ev.step, self.version)
        self.pending.pop(ev.command_id, None)
        self._mark(ev.step, "params", "P")

    def _on_command_result(self, ev: CommandResult) -> None:
        pending = self.pending.get(ev.command_id)
        if ev.status in ("rejected", "failed"):
            changes = pending.changes if pending else {}
            self.rejections.append(Rejection(ev.command_id, ev.command, ev.status, ev.reason, changes, self.version))
            self.pending.pop(ev.command_id, None)
        elif ev.status == "accepted":
            if pending is not None:
                pending.status = "accepted"
            if ev.command in _RESYNC_KINDS:
                self._resync_requested = True
        elif ev.status == "applied":
            self.pending.pop(ev.command_id, None)
            if ev.command in _RESYNC_KINDS:
                self._resync_requested = False
                self._mark(ev.step or self.step, "resync", "W")

    def _on_checkpoint_saved(self, ev: CheckpointSaved) -> None:
        self.last_checkpoint = ev

    def _on_alert(self, ev: Alert) -> None:
        self.alerts.append(ev)
        if ev.state != "cleared" and ev.severity != "info":
            self._mark(ev.step, "alert", "!")
        if ev.lasting:  # a condition: active from its raise until its cleared event
            if ev.state == "raised":
                self.active_alerts[ev.rule] = ev
            else:
                self.active_alerts.pop(ev.rule, None)

    def alerts_for_display(self) -> tuple[list[Alert], list[Alert]]:
        """(active conditions, critical first then oldest first; the other alerts, newest first)."""
        active = sorted(self.active_alerts.values(), key=lambda a: (a.severity != "critical", a.since or a.step))
        live = {id(a) for a in active}
        return active, [a for a in reversed(self.alerts) if id(a) not in live]

    def current_value(self, alert: Alert) -> float | None:
        """The newest value of the metric an alert watches (None when the metrics do not carry it)."""
        m = self.latest_metrics
        if m is None or not alert.metric:
            return None
        value = m.times.total if alert.metric == "step_time" else getattr(m, alert.metric, None)
        return value if isinstance(value, (int, float)) else None

    def _add_log(self, ts: float, text: str, level: str, kind: str = "other") -> None:
        entry = LogEntry(self.log_total, ts, level, text, kind)
        self.log.append(entry)
        ring = self.log_by_kind.get(kind)
        if ring is None:
            ring = self.log_by_kind[kind] = deque(maxlen=self._max_log)
        ring.append(entry)
        self.log_total += 1

    def _mark(self, step: int, kind: str, label: str) -> None:
        if any(m.step == step and m.kind == kind for m in self.markers):
            return
        self.markers.append(Marker(step, kind, label))

    def _clock(self, event: Any) -> None:
        # a new backend begins with RunResumed (then its own RunStarted) or, fresh, with RunStarted
        begins = isinstance(event, RunResumed) or (isinstance(event, RunStarted) and not self._resuming)
        if isinstance(event, (RunStarted, RunResumed)):
            self._resuming = isinstance(event, RunResumed)
        if begins and self._backend_start is not None and self.last_ts is not None:
            # the time between the last backend's newest event and this start did not run
            self._ran_before += max(0.0, self.last_ts - self._backend_start)
            self._backend_start = event.ts
        if self.first_ts is None:
            self.first_ts = event.ts
        if self._backend_start is None:
            self._backend_start = event.ts
        self.last_ts = max(self.last_ts or event.ts, event.ts)

    # -- derived views ----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds the run has run, by its events' times: each backend's from its start to its
        newest event, summed over the backends of a resumed run (the gaps between them are not
        counted)."""
        if self._backend_start is None or self.last_ts is None:
            return 0.0
        return self._ran_before + self.last_ts - self._backend_start

    def elapsed_at(self, now: float | None) -> float:
        """`elapsed`, running on to `now` while the run's backend is live (between events too);
        `now` None (a replay, a test's feed): by the events' times only."""
        if now is None or not self.connected or self.state not in LIVE_STATES or self._backend_start is None:
            return self.elapsed
        return self._ran_before + max(now, self.last_ts or now) - self._backend_start

    def log_since(self, index: int, kinds: frozenset[str] | None = None) -> list[LogEntry]:
        """Log entries with `entry.index >= index` still held: of every kind from the shared
        ring (`kinds` None), or of those kinds from their own rings, in order."""
        if kinds is not None:
            out: list[LogEntry] = []
            for kind in kinds:
                part = []
                for entry in reversed(self.log_by_kind.get(kind, ())):
                    if entry.index < index:
                        break
                    part.append(entry)
                out.extend(part)
            out.sort(key=lambda e: e.index)
            return out
        if not self.log or index > self.log[-1].index:
            return []
        start = max(index - self.log[0].index, 0)
        return [self.log[i] for i in range(start, len(self.log))]

    @property
    def latest_metrics(self) -> StepMetrics | None:
        return self.steps[-1] if self.steps else None

    def reward_series(self, function: str | None = None) -> list[tuple[int, float, float | None]]:
        """(step, mean, std) per step: the total reward with its std, or one function's mean (no std)."""
        steps = [m for m in self.steps if not m.update_skipped]  # a skipped step's rewards measure nothing
        if function is None:
            return [(m.step, m.reward_mean, m.reward_std) for m in steps]
        return [(m.step, m.rewards_by_function[function], None) for m in steps if function in m.rewards_by_function]

    def reward_bounds(self, function: str | None = None) -> tuple[float, float] | None:
        """The natural bounds of a reward function (the range it declares), or of the total: the
        weighted sum of every function's range (TRL sums weight x value), only when every
        function declares one. None when unknown: nothing is guessed from the values seen."""
        if function is not None:
            return self.reward_ranges.get(function)
        if not self.reward_functions or any(n not in self.reward_ranges for n in self.reward_functions):
            return None
        lo = hi = 0.0
        for name in self.reward_functions:
            w = self.reward_weights.get(name, 1.0)
            a, b = (w * v for v in self.reward_ranges[name])
            lo, hi = lo + min(a, b), hi + max(a, b)
        return lo, hi

    def newest_groups(self, count: int) -> list[SampleGroup]:
        out: list[SampleGroup] = []
        for group in reversed(self.groups):
            if len(out) >= count:
                break
            out.append(group)
        return out

    def view_groups(self, *, query: str = "", zero_std: bool = False, truncated: bool = False, sort: str = "newest",
                    only: frozenset[tuple[int, int]] | None = None) -> list[SampleGroup]:
        """The held groups for the samples screen (see `filter_groups`)."""
        return filter_groups(reversed(self.groups), query=query, zero_std=zero_std, truncated=truncated, sort=sort, only=only)

    def pending_value(self, name: str) -> tuple[Any, str] | None:
        """The newest not-yet-applied value sent for a live parameter, with its status."""
        for pending in sorted(self.pending.values(), key=lambda p: p.order, reverse=True):
            if name in pending.changes:
                return pending.changes[name], pending.status
        return None

    def last_param_rejection(self) -> Rejection | None:
        """This console's newest parameter change that did not go through, unless a change
        applied since (another client's rejection is theirs: the form is this console's)."""
        newest_applied = max((order for _, _, order in self.applied.values()), default=-1)
        for rejection in reversed(self.rejections):
            if not self.is_ours(rejection.command_id):
                continue
            if rejection.command == "set_params" or rejection.changes:
                return rejection if rejection.order > newest_applied else None
        return None

    def param_status(self, name: str) -> tuple[str, str]:
        """(text, level) describing the latest thing that happened to one live parameter."""
        pending = self.pending_value(name)
        if pending is not None:
            return f"pending {pending[0]} ({pending[1]})", "pending"
        applied = self.applied.get(name)
        rejection = next((r for r in reversed(self.rejections) if name in r.changes), None)
        if rejection is not None and (applied is None or rejection.order > applied[2]):
            return f"{rejection.status}: {rejection.changes[name]}", "rejected"
        if applied is not None:
            return f"applied at step {applied[1]}", "applied"
        return "", ""

    def param_limits(self) -> dict[str, tuple[str, int | float | None, str]]:
        """(range as shown, effective upper bound or None, why) per live parameter: the
        registry's range, narrowed by what this run's start says (engine.max_model_len bounds
        max_tokens; beta stays 0 without a reference model)."""
        out: dict[str, tuple[str, int | float | None, str]] = {name: (param_range(name), None, "") for name in LIVE_PARAMS}
        if self.max_model_len:
            longest = self.max_prompt_tokens  # 0: a backend that does not say (the backend still checks)
            hi = min(self.max_model_len - max(1, longest), _registry_max("max_tokens"))
            out["max_tokens"] = (f"1…{hi}*", hi, f"max_tokens + the longest prompt{f' ({longest} tokens)' if longest else ''} "
                                 f"≤ engine.max_model_len = {self.max_model_len}"
                                 + ("" if longest else " (the backend checks the exact prompt length)"))
        if self.has_ref_model is False:
            out["beta"] = ("0 only*", 0, "beta > 0 needs a reference model, loaded only when a run starts with "
                           "training.beta > 0")
        return out

    def live_param_values(self) -> dict[str, Any]:
        return {name: self.live_params.get(name) for name in LIVE_PARAMS}

    # -- policy probes and playground tries ------------------------------------------------
    def _on_policy_probe(self, ev: PolicyProbe) -> None:
        """One probe per weight version: a version probed again (a resumed run) replaces it. The
        first one stays after the ring has moved on: what the policy said at the start."""
        if any(p.weight_version == ev.weight_version for p in self.probes):
            self.probes = deque((p for p in self.probes if p.weight_version != ev.weight_version), maxlen=self.probes.maxlen)
        self.probes.append(ev)
        if self.probe_baseline is None or self.probe_baseline.weight_version >= ev.weight_version:
            self.probe_baseline = ev

    def probes_held(self) -> list[PolicyProbe]:
        """The probes to show, oldest first: the ring, after the first probe if the ring dropped it."""
        base = self.probe_baseline
        if base is None or (self.probes and self.probes[0].weight_version <= base.weight_version):
            return list(self.probes)
        return [base, *self.probes]

    def _on_try_result(self, ev: TryResult) -> None:
        self.tries.append(ev)

    @property
    def probe_every(self) -> int | None:
        """telemetry.probe_every of the run (0: probes off; None: the run did not say)."""
        value = self.telemetry.get("probe_every")
        return int(value) if isinstance(value, (int, float)) else None

    def probe_prompts(self) -> list[str]:
        """The probe prompts, in the order of the newest probe (then any only older ones had)."""
        out: list[str] = []
        for probe in reversed(self.probes_held()):
            for p in probe.probes:
                if p.prompt not in out:
                    out.append(p.prompt)
        return out

    def probe_history(self, prompt: str) -> list[tuple[PolicyProbe, Any]]:
        """(probe event, that prompt's ProbeOutput) at each recorded weight version, newest first."""
        out = []
        for probe in reversed(self.probes_held()):
            found = next((p for p in probe.probes if p.prompt == prompt), None)
            if found is not None:
                out.append((probe, found))
        return out

    def try_result(self, command_id: str) -> TryResult | None:
        return next((t for t in reversed(self.tries) if t.command_id == command_id), None)
