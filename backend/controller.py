"""The run's desk and state machine: validate, answer, queue, and the run's lifecycle.

Threads: `run()` executes on the training thread (TRL's loop is blocking); `submit()` is
called from the server's event loop and only validates, answers and enqueues. The step
loop (`backend.training.step.StepLoop`) takes the queued commands at each step boundary
(`at_boundary`: before each step's rollout, and while paused), so a command is applied
exactly between two optimizer steps and recorded in the event log. Events go through the
run's `EventBus` (`backend.bus`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.bus import EventBus, LogUnwritable
from backend.engine.base import EngineError, Sampling
from backend.protocol import commands as C
from backend.protocol import events as E
from backend.protocol.params import SAMPLING_PARAMS
from backend.runstore import RunStore, write_run_meta
from backend.settings import RunProfile
from backend.telemetry import host

if TYPE_CHECKING:  # the training side imports torch/TRL: loaded in run(), not on import
    from backend.training.session import TrainingSession
    from backend.training.step import StepLoop

__all__ = ["Controller", "LogUnwritable"]


class Controller:
    def __init__(
        self, profile: RunProfile, *, run_id: str, run_dir: Path, profile_name: str, store: RunStore, resume: Any = None
    ) -> None:
        self.profile = profile
        self.run_id = run_id
        self.run_dir = run_dir
        self.profile_name = profile_name
        self.store = store
        self.bus = EventBus(store, on_broken=self._log_broken)
        self.state: E.RunState = "starting"
        self.params: dict[str, Any] = profile.live_params()  # the step loop's own, once it exists
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._pause_requested = False
        self._pause_reason = ""
        self._stop_requested = False
        self.session: TrainingSession | None = None  # built in run()
        self.loop: StepLoop | None = None  # built in run()
        self.resume = resume  # training.checkpoints.ResumePoint: continue from it (same data order, verified weights)
        self._start_step = resume.step if resume is not None else 0
        self._checkpoint_at_stop = True
        self._disk_low = False
        self._memory_low = False
        self._memory_need = host.NextStepNeed()
        self._intake = threading.Lock()  # a command is checked and queued, or the run's end is declared: not both at once
        self._closed = ""  # why no command is taken any more (the run ended), once it has

    @property
    def step(self) -> int:
        """Completed optimizer steps (the step loop's counter once it runs)."""
        return self.loop.step if self.loop is not None else self._start_step

    @property
    def log_broken(self) -> str:
        """Why the event log cannot be written (empty while it can): the run ends."""
        return f"{self.bus.broken} at step {self.step}" if self.bus.broken else ""

    def _log_broken(self, reason: str) -> None:
        write_run_meta(self.run_dir, state="failed", step=self.step, reason=f"{reason} at step {self.step}")

    # ---- events ---------------------------------------------------------
    def emit(self, event: Any) -> Any:
        return self.bus.emit(event)

    def emit_many(self, events: list[Any]) -> list[Any]:
        return self.bus.emit_many(events)

    def set_state(self, state: E.RunState, reason: str = "") -> None:
        self.state = state
        if self.log_broken:  # nothing reaches the log any more: run.json keeps the real reason
            with contextlib.suppress(OSError):
                write_run_meta(self.run_dir, state="failed", step=self.step, reason=self.log_broken)
            return
        self.emit(E.StateChanged(state=state, reason=reason, step=self.step))
        write_run_meta(self.run_dir, state=state, step=self.step, reason=reason)

    def check_disk(self) -> None:
        """At a step boundary: below `run.min_free_disk_mb` free where the run writes, alert once
        and pause (the last checkpoint stays; the log keeps room for the pause's own events)
        before the disk fills and the log can no longer be written."""
        limit = self.profile.run.min_free_disk_mb
        if not limit:
            return
        try:
            free_mb = shutil.disk_usage(self.run_dir).free / 2**20
        except OSError:
            return
        if free_mb >= limit:
            self._disk_low = False
            return
        if self._disk_low:
            return
        self._disk_low = True
        msg = f"only {free_mb:,.0f} MB free where the run writes ({self.run_dir}), below run.min_free_disk_mb = {limit}"
        self.emit(E.Alert(rule="disk_low", severity="critical", message=msg, step=self.step, metric="free_disk_mb",
                          value=free_mb, threshold=float(limit),
                          suggestion="free space (old runs, checkpoints), then resume; the last checkpoint is kept"))
        self.request_pause(f"disk almost full: {msg}")

    def check_memory(self) -> None:
        """At a step boundary: report the host's memory (`HostMemory`), and when what the next step
        is expected to need (`host.NextStepNeed`, +10%) would leave less than
        `run.min_free_memory_mb`, alert once and pause: the kernel would otherwise kill the run
        mid-step, without a word."""
        r = host.read()
        if r is None:  # not Linux: nothing to read
            return
        if self._memory_need.first_estimate is None and self.session is not None:
            self._memory_need.first_estimate = getattr(self.session, "first_update_mb", None)
        need = self._memory_need.update(r)
        self.emit(E.HostMemory(step=self.step, rss_mb=r.rss_mb, step_need_mb=need, last_step_mb=self._memory_need.last,
                               available_mb=r.available_mb, total_mb=r.total_mb, limit=r.limit))
        limit = self.profile.run.min_free_memory_mb
        if not limit or host.next_step_fits(r.available_mb, need, limit):
            self._memory_low = False
            return
        if self._memory_low:
            return
        self._memory_low = True
        where = "the container's memory limit" if r.limit == "cgroup" else "the machine"
        why = ("estimated from the model's shape and the longest prompt: no step has run yet" if self._memory_need.estimated
               else "the most a recent step took and freed again, less what the allocator holds free now")
        msg = (f"{r.available_mb:,.0f} MB free of {r.total_mb:,.0f} MB ({where}); the next step is expected to need "
               f"{need or 0:,.0f} MB more than the run holds now ({why}), which could leave less than "
               f"run.min_free_memory_mb = {limit}: the kernel kills a process that runs out")
        if self._memory_need.estimated:  # before step 1: the update as configured; resume it with more passes
            shape = getattr(self.session, "update_shape", None)
            fit = host.passes_that_fit(shape, r.available_mb, limit) if shape is not None else None
            # (a stop checkpoints the untrained weights, so `--resume` keeps this run and its history)
            suggestion = (f"stop (x), then rl-console run --resume {self.run_id} " +
                          (f"--set training.micro_batches={fit[0]} (about {fit[1]:,.0f} MB; " if fit else "with a larger training.micro_batches (") +
                          "each pass holds 1/K of the batch), or a smaller sampling.max_tokens or training.prompts_per_step; "
                          "resume (p) to try it as it is")
        else:
            suggestion = ("free memory elsewhere and resume; or make the steps smaller: max_tokens live (e), or "
                          "stop and `rl-console run --resume RUN --set training.micro_batches=K` (K passes per update, "
                          "each holding 1/K of the batch) or a smaller training.prompts_per_step")
        self.emit(E.Alert(rule="memory_low", severity="critical", message=msg, step=self.step, metric="available_mb",
                          value=r.available_mb, threshold=float(limit), suggestion=suggestion))
        # (the state's reason keeps what precedes the first ";": the need and what is free)
        self.request_pause(f"host memory low: the next step is expected to need about {need or 0:,.0f} MB more, "
                           f"{r.available_mb:,.0f} MB free of {r.total_mb:,.0f} MB ({where}); {msg}")

    def progress(self, stage: str, message: str, current: int = 0, total: int = 0) -> None:
        self.emit(E.Progress(stage=stage, message=message, current=current, total=total))

    # ---- commands (server thread) ---------------------------------------
    def submit(self, cmd: Any) -> E.CommandResult:
        """Validate now, answer now, apply at the next boundary."""
        with self._intake:
            reason = self._closed or self._reject_reason(cmd)
            if reason:
                return self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="rejected", reason=reason, step=self.step))
            # answered before it can take effect: the training thread may act on it at once (a
            # pause at a boundary), and its state change must not precede the "accepted"
            accepted = self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="accepted", step=self.step))
            if isinstance(cmd, C.Pause):
                self.request_pause("pause requested; takes effect at the next step boundary")
            elif isinstance(cmd, C.Stop):
                self._stop_requested = True
                self._checkpoint_at_stop = cmd.checkpoint
                self.set_state("stopping", "stop requested; takes effect at the next step boundary"
                               + (" (checkpoint first)" if cmd.checkpoint else " (no checkpoint)"))
            self._queue.put(cmd)
            return accepted

    def _close_intake(self) -> None:
        """The run has ended: refuse commands from now on, and answer those it accepted but
        never reached a step boundary to apply (sent during the last step), so that nobody
        waits for them."""
        with self._intake:
            self._closed = f"the run is {self.state} (step {self.step})"
            left = []
            while True:
                try:
                    left.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        for cmd in left:
            if isinstance(cmd, C.Stop):  # the run stopped anyway
                self.done(cmd)
            else:
                self.failed(cmd, f"not applied: the run ended ({self.state}, step {self.step}) before the next step "
                                 "boundary, where commands apply")

    def reject(self, command_id: str, kind: str, reason: str) -> E.CommandResult:
        """A command that failed validation before it could be built (e.g. out of range)."""
        return self.emit(E.CommandResult(command_id=command_id, command=kind, status="rejected", reason=reason, step=self.step))

    def _reject_reason(self, cmd: Any) -> str:
        if isinstance(cmd, C.Stop) and self._stop_requested and self.state not in ("finished", "failed"):
            return "a stop is already pending (it takes effect at the next step boundary)"
        done = self.state in ("finished", "failed", "stopping")
        if done:
            return f"the run is {self.state}"
        if isinstance(cmd, C.Pause) and (self.state in ("paused", "pausing") or self._pause_requested):
            return "already paused" if self.state == "paused" else "a pause is already pending"
        if isinstance(cmd, C.Resume) and self.state not in ("paused", "pausing"):
            return f"not paused (state: {self.state})"
        if isinstance(cmd, (C.ResyncWeights, C.Checkpoint)) and self.state == "starting":
            return "the run is still starting; try again once steps are running"
        if isinstance(cmd, C.SetParams):
            return self._param_guardrails(cmd.changes())
        if isinstance(cmd, C.TryPrompt):
            return self._try_guardrails(cmd)
        if isinstance(cmd, C.Subscribe):
            return "subscribe is a connection request, not a run command"
        return ""

    def _param_guardrails(self, changes: dict[str, Any]) -> str:
        """Why the run cannot take these changes ("" when it can): every reason at once, so an
        operator fixes them in one go, not one rejection at a time."""
        new = {**self.params, **changes}
        s = self.session
        why: list[str] = []
        if s is not None:
            if new["max_tokens"] + s.max_prompt_tokens > self.profile.engine.max_model_len:
                why.append(
                    f"max_tokens={new['max_tokens']} + longest prompt ({s.max_prompt_tokens} tokens) exceeds "
                    f"engine.max_model_len={self.profile.engine.max_model_len}"
                )
            t: Any = self.profile.training  # (a section built from the parameter registry)
            k = t.micro_batches
            if "num_generations" in changes and (t.prompts_per_step * new["num_generations"]) % k:
                why.append(f"num_generations={new['num_generations']}: the step's batch (prompts_per_step "
                           f"{t.prompts_per_step} × G) must divide by training.micro_batches = {k}")
            if "beta" in changes and changes["beta"] > 0 and not s.has_ref_model:
                why.append("beta > 0 needs a reference model, which is loaded only when the run starts with training.beta > 0")
            if changes.keys() & SAMPLING_PARAMS:
                from backend.engine.local import sampling_error  # vLLM is loaded by now

                engine_says = sampling_error(Sampling.live(new, n=new["num_generations"], seed=0))
                if engine_says:
                    why.append(engine_says)
        return "; ".join(why)

    def _try_guardrails(self, cmd: Any) -> str:
        """A playground request the engine would fail on is refused now: a failed generate takes
        an in-process engine (and the run) down."""
        s = self.session
        if self.state == "starting" or s is None or s.engine is None:
            return "the run is still starting; try again once steps are running"
        new = {**self.params, **cmd.overrides()}
        from backend.engine.local import sampling_error  # vLLM is loaded by now

        why = sampling_error(Sampling.live(new, n=cmd.n, seed=0))
        if why:
            return why
        if cmd.columns and s.task is not None:
            from backend.training.probes import dataset_columns

            known = dataset_columns(s.task.dataset)
            unknown = [c for c in cmd.columns if c not in known]
            if unknown:
                return (f"column {unknown[0]!r} is not a column of the task's dataset (the reward functions get only "
                        f"those: {', '.join(known) if known else 'it has none besides the prompt'})")
        prompt = [{"role": "user", "content": cmd.prompt}] if s.conversational else cmd.prompt
        try:
            length = len(s.encode(prompt))
        except Exception as exc:  # noqa: BLE001 - a prompt the tokenizer refuses
            return f"the tokenizer refuses the prompt: {type(exc).__name__}: {exc}"
        if not length:
            return ("the prompt encodes to no tokens: the model's tokenizer knows none of its characters "
                    "(the embedded model's knows the task's characters only)")
        limit = self.profile.engine.max_model_len
        if length + new["max_tokens"] > limit:
            return f"prompt ({length} tokens) + max_tokens ({new['max_tokens']}) exceeds engine.max_model_len={limit}"
        return ""

    # ---- boundary (training thread) ----------------------------------------
    def at_boundary(self, *, idle: Callable[[], None], wake: Callable[[], None],
                    resume_check: Callable[[], str | None] | None = None) -> Iterator[Any]:
        """The queued commands for the step loop to apply, in order. When a pause is due,
        `idle()` the engine, report paused and go on yielding commands as they arrive until a
        Resume, then `wake()` it. Pause and Resume are the desk's own; it answers them.
        `resume_check()` runs on a Resume while paused: a reason it returns fails that Resume
        with the reason (the run stays paused, and says why), None lets the run go on."""
        self.check_memory()
        self.check_disk()
        pauses: list[Any] = []  # answered "applied" once the run is paused (not before: the header would still say running)
        while True:
            try:
                cmd = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(cmd, C.Resume):  # sent while pausing: the pause is called off
                if self._pause_requested:
                    self._pause_requested = False
                    self.set_state("running", "pause called off by resume")
                for p in pauses:
                    self.done(p)
                pauses.clear()
                self.done(cmd)
            elif isinstance(cmd, C.Pause):
                pauses.append(cmd)  # the pause itself is entered below
            else:
                yield cmd
        if not self._pause_requested:
            for p in pauses:
                self.done(p)
            return
        self._pause_requested = False
        t0 = time.perf_counter()
        idle()
        why = self._pause_reason.split(";")[0]
        self.set_state("paused", f"paused at step {self.step} ({(time.perf_counter() - t0) * 1000:.0f} ms to idle the engine): {why}")
        for p in pauses:
            self.done(p)
        while True:
            try:
                cmd = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(cmd, C.Resume):
                refused = resume_check() if resume_check is not None else None
                if refused:
                    self.failed(cmd, f"still paused: {refused}")
                    self._pause_reason = refused
                    self.set_state("paused", f"still paused at step {self.step}: {refused}")
                    continue
                wake()
                self.done(cmd)
                self.set_state("running", "resumed")
                return
            if isinstance(cmd, C.Pause):
                self.done(cmd)
            else:
                yield cmd

    def done(self, cmd: Any) -> None:
        self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="applied", step=self.step))

    def failed(self, cmd: Any, reason: str) -> None:
        self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="failed", reason=reason, step=self.step))

    # ---- the run -----------------------------------------------------------
    def run(self) -> int:
        """Blocking. Returns a process exit code."""
        from backend.training.session import TrainingSession
        from backend.training.step import StepLoop

        meta = {"created": time.time()} if self.resume is None else {"resumed": time.time()}
        write_run_meta(self.run_dir, run_id=self.run_id, pid=os.getpid(), profile=self.profile_name, state="starting", **meta)
        if self.resume is not None:
            r = self.resume
            if r.previous_end:  # the crash itself, said in the run's log (its backend could not)
                self.emit(E.LogLine(level="warning", message=f"{r.previous_end}; resuming from step {r.step}"))
            self.emit(E.RunResumed(step=r.step, checkpoint=str(r.path), previous_pid=r.previous_pid, checksum=r.checksum))
            self.set_state("starting", f"resuming from {r.path.name} (step {r.step}): building model and engine")
        else:
            self.set_state("starting", "building model and engine")
        try:
            self.session = TrainingSession(self.profile, self.bus, run_id=self.run_id, run_dir=self.run_dir,
                                           profile_name=self.profile_name, resume=self.resume)
            self.loop = StepLoop(self.profile, self.bus, self, self.session, params=self.params, step=self._start_step,
                                 weight_version=self.resume.weight_version if self.resume is not None else 0,
                                 resume=self.resume)
            self.loop.start()
        except Exception as exc:
            self.set_state("failed", f"setup failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            with contextlib.suppress(LogUnwritable):
                self._close_intake()
            self._teardown()
            return 4 if self.log_broken else 2
        if not self._stop_requested:  # (a stop accepted while starting keeps saying so)
            self.set_state("running", "training")
        code = 0
        try:
            self.loop.train()
            self._final_probe()
            if self._stop_requested:
                self.set_state("stopping", "stop requested" + (": checkpointing" if self._checkpoint_at_stop else " without a checkpoint"))
            if self._checkpoint_at_stop and self.loop.checkpointed_step != self.step:  # not twice for one step
                self.loop.checkpoint("final")
            self.set_state("finished", (f"stopped at step {self.step}" if self._stop_requested
                                        else f"completed {self.step} step{'s' * (self.step != 1)}") + self._skipped_note())
        except LogUnwritable as exc:  # no event can be recorded any more: stop, reason in run.json
            print(f"rl-console: stopping: {exc}", file=sys.stderr, flush=True)
            self.set_state("failed")
            code = 4
        except EngineError as exc:
            self.emit(E.Alert(rule="engine", severity="critical", message=str(exc), step=self.step,
                              suggestion="see backend.log; resume from the last checkpoint once the engine is healthy"))
            self.set_state("failed", f"engine: {exc}")
            code = 3
        except Exception as exc:
            traceback.print_exc()
            self.set_state("failed", f"{type(exc).__name__}: {exc}{self._hint(exc)}")
            code = 1
        finally:
            with contextlib.suppress(LogUnwritable):
                self._close_intake()
            self._teardown()
        return code

    def abort(self, reason: str, *, code: int) -> None:
        """End the process now, from a thread other than the training thread (which is stuck):
        the run is recorded as failed with `reason` (log and run.json), then the process exits;
        the OS releases the run's lock, and a client sees its connection close."""
        with contextlib.suppress(Exception):
            with self._intake:
                self._closed = f"the run failed: {reason}"
            self.set_state("failed", reason)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    def _final_probe(self) -> None:
        """The policy probe on the weights the run ends with (the last scheduled one is up to
        `telemetry.probe_every` - 1 steps older). A failure here costs the probe, not the run."""
        if self.loop is None:
            return
        try:
            self.loop.final_probe()
        except LogUnwritable:
            raise
        except Exception as exc:  # noqa: BLE001
            self.emit(E.LogLine(level="warning", message=f"the final policy probe failed: {type(exc).__name__}: {exc}"))

    def _hint(self, exc: BaseException) -> str:
        """What an operator can change for a failure with a known remedy."""
        if type(exc).__name__ != "OutOfMemoryError":
            return ""
        t: Any = self.profile.training
        g = self.params["num_generations"]
        rows = t.prompts_per_step * g // t.micro_batches
        return (f" — each update pass holds {rows} sequences (prompts_per_step {t.prompts_per_step} × G {g} / "
                f"training.micro_batches {t.micro_batches}): raise training.micro_batches to split the update into "
                "more passes, or lower sampling.max_tokens, training.prompts_per_step or engine.gpu_memory_utilization")

    def _skipped_note(self) -> str:
        """How many of this backend's updates were skipped (a failed reward, NaN/Inf): a run
        whose last step failed ends with a pause requested that no boundary will take."""
        skipped = self.loop.skipped_steps if self.loop is not None else []
        if not skipped:
            return ""
        steps = ", ".join(map(str, skipped[:8])) + (", …" if len(skipped) > 8 else "")
        return (f" ({len(skipped)} update{'s' * (len(skipped) != 1)} skipped: step{'s' * (len(skipped) != 1)} {steps};"
                " see the alerts)")

    def request_pause(self, reason: str) -> None:
        """From a command or an alert rule: pause at the next step boundary."""
        if self._pause_requested or self.state in ("paused", "pausing", "finished", "failed", "stopping"):
            return
        self._pause_requested = True
        self._pause_reason = reason
        self.set_state("pausing", reason)

    def request_stop(self, why: str = "signal") -> None:
        """From a signal handler: stop at the next boundary (checkpoint first). `why` (e.g.
        SIGTERM) is the command's id, so the log says what stopped the run."""
        if self.state not in ("finished", "failed", "stopping"):
            self._stop_requested = True
            self._queue.put(C.Stop(id=why))

    def _teardown(self) -> None:
        if self.session is not None:
            self.session.close()

