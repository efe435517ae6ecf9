"""The run state machine. Owns the engine and the trainer; applies commands at step boundaries.

Threads: `run()` executes on the training thread (TRL's loop is blocking); `submit()` is
called from the server's event loop and only validates, answers and enqueues. Every
boundary (before each step's rollout, and while paused) drains the queue, so a command
is applied exactly between two optimizer steps and recorded in the event log.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.engine.base import EngineError, Sampling
from backend.protocol import commands as C
from backend.protocol import events as E
from backend.protocol.params import SAMPLING_PARAMS
from backend.runstore import RunStore, write_run_meta
from backend.settings import RunProfile
from backend.training.trainer import StopTraining

Listener = Callable[[Any], None]

class LogUnwritable(RuntimeError):
    """The run's event log cannot be written; the run stops (see Controller.emit_many)."""




class Controller:
    def __init__(
        self, profile: RunProfile, *, run_id: str, run_dir: Path, profile_name: str, store: RunStore, resume: Any = None
    ) -> None:
        self.profile = profile
        self.run_id = run_id
        self.run_dir = run_dir
        self.profile_name = profile_name
        self.store = store
        self.listeners: list[Listener] = []
        self.state: str = "starting"
        self.params: dict[str, Any] = profile.live_params()
        self.step = 0  # completed optimizer steps (kept across train() restarts)
        self.weight_version = 0
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._pause_requested = False
        self._pause_reason = ""
        self._stop_requested = False
        self._emit_lock = threading.Lock()
        self.engine = None
        self.trainer = None
        self.session = None  # backend.session.TrainingSession, built in run()
        self.resume = resume  # training.checkpoints.ResumePoint: continue from it (same data order, verified weights)
        self._checkpoint_at_stop = True
        self.log_broken = ""  # set when the event log cannot be written: the run ends
        self._disk_low = False
        if resume is not None:
            self.step = resume.step
            self.weight_version = resume.weight_version  # the live params come with the profile

    # ---- events ---------------------------------------------------------
    def emit(self, event: Any) -> Any:
        return self.emit_many([event])[0]

    def emit_many(self, events: list[Any]) -> list[Any]:
        """Store events (one log transaction), then deliver them to listeners in order.

        A log that cannot be written (disk full, I/O error, the file gone read-only) ends the
        run: nothing may happen that the log does not record. The reason goes to run.json,
        where `status` and `ls` read it, and `LogUnwritable` unwinds the training thread."""
        with self._emit_lock:
            if self.log_broken:
                raise LogUnwritable(self.log_broken)
            try:
                stored = self.store.append_many(events)
            except (sqlite3.Error, OSError) as exc:
                self.log_broken = f"the event log cannot be written ({type(exc).__name__}: {exc}) at step {self.step}"
                with contextlib.suppress(OSError):
                    write_run_meta(self.run_dir, state="failed", step=self.step, reason=self.log_broken)
                raise LogUnwritable(self.log_broken) from exc
            for ev in stored:
                for listener in list(self.listeners):
                    try:
                        listener(ev)
                    except Exception:  # a broken listener never stops the run
                        traceback.print_exc()
        return stored

    def set_state(self, state: str, reason: str = "") -> None:
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

    def progress(self, stage: str, message: str, current: int = 0, total: int = 0) -> None:
        self.emit(E.Progress(stage=stage, message=message, current=current, total=total))

    # ---- commands (server thread) ---------------------------------------
    def submit(self, cmd: Any) -> E.CommandResult:
        """Validate now, answer now, apply at the next boundary."""
        reason = self._reject_reason(cmd)
        if reason:
            return self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="rejected", reason=reason, step=self.step))
        if isinstance(cmd, C.Pause):
            self.request_pause("pause requested; takes effect at the next step boundary")
        elif isinstance(cmd, C.Stop):
            self._stop_requested = True
            self._checkpoint_at_stop = cmd.checkpoint
        self._queue.put(cmd)
        return self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="accepted", step=self.step))

    def reject(self, command_id: str, kind: str, reason: str) -> E.CommandResult:
        """A command that failed validation before it could be built (e.g. out of range)."""
        return self.emit(E.CommandResult(command_id=command_id, command=kind, status="rejected", reason=reason, step=self.step))

    def _reject_reason(self, cmd: Any) -> str:
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
        if isinstance(cmd, C.Subscribe):
            return "subscribe is a connection request, not a run command"
        return ""

    def _param_guardrails(self, changes: dict[str, Any]) -> str:
        new = {**self.params, **changes}
        s = self.session
        if s is not None:
            if new["max_tokens"] + s.max_prompt_tokens > self.profile.engine.max_model_len:
                return (
                    f"max_tokens={new['max_tokens']} + longest prompt ({s.max_prompt_tokens} tokens) exceeds "
                    f"engine.max_model_len={self.profile.engine.max_model_len}"
                )
            if "beta" in changes and changes["beta"] > 0 and not s.has_ref_model:
                return "beta > 0 needs a reference model, which is loaded only when the run starts with training.beta > 0"
            if changes.keys() & SAMPLING_PARAMS:
                from backend.engine.local import sampling_error  # vLLM is loaded by now

                why = sampling_error(Sampling(n=new["num_generations"], temperature=new["temperature"], top_p=new["top_p"],
                                              top_k=new["top_k"], max_tokens=new["max_tokens"], seed=0))
                if why:
                    return why
        return ""

    # ---- boundary (training thread) ----------------------------------------
    def boundary(self) -> None:
        """Apply queued commands; block here while paused."""
        self.check_disk()
        while True:
            try:
                cmd = self._queue.get_nowait()
            except queue.Empty:
                break
            self._apply(cmd)
        if self._pause_requested:
            self._pause_requested = False
            self._enter_pause()

    def _enter_pause(self) -> None:
        t0 = time.perf_counter()
        self.session.engine.pause()
        why = self._pause_reason.split(";")[0]
        self.set_state("paused", f"paused at step {self.step} ({(time.perf_counter() - t0) * 1000:.0f} ms to idle the engine): {why}")
        while True:
            try:
                cmd = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(cmd, C.Resume):
                self.session.engine.resume()
                self._done(cmd)
                self.set_state("running", "resumed")
                return
            self._apply(cmd)

    def _apply(self, cmd: Any) -> None:
        try:
            if isinstance(cmd, C.SetParams):
                changed = self.session.apply_params(cmd.changes())
                self.params.update(changed)
                self.emit(E.ParamsApplied(command_id=cmd.id, step=self.step, changed=changed, params=dict(self.params)))
            elif isinstance(cmd, C.ResyncWeights):
                self.session.sync_weights(verify=True, reason="resync")
            elif isinstance(cmd, C.Checkpoint):
                self.session.checkpoint()
            elif isinstance(cmd, C.Stop):
                self._done(cmd)
                raise StopTraining("stop requested")
            elif isinstance(cmd, C.Pause):
                pass  # handled by the pause flag
            elif isinstance(cmd, C.Resume):  # sent while pausing: the pause is called off
                if self._pause_requested:
                    self._pause_requested = False
                    self.set_state("running", "pause called off by resume")
            self._done(cmd)
        except (StopTraining, LogUnwritable):
            raise
        except Exception as exc:
            self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="failed", reason=f"{type(exc).__name__}: {exc}", step=self.step))

    def _done(self, cmd: Any) -> None:
        self.emit(E.CommandResult(command_id=cmd.id, command=cmd.kind, status="applied", step=self.step))

    # ---- the run -----------------------------------------------------------
    def run(self) -> int:
        """Blocking. Returns a process exit code."""
        from backend.training.session import TrainingSession

        meta = {"created": time.time()} if self.resume is None else {"resumed": time.time()}
        write_run_meta(self.run_dir, run_id=self.run_id, pid=os.getpid(), profile=self.profile_name, state="starting", **meta)
        if self.resume is not None:
            r = self.resume
            self.emit(E.RunResumed(step=r.step, checkpoint=str(r.path), previous_pid=r.previous_pid, checksum=r.checksum))
            self.set_state("starting", f"resuming from {r.path.name} (step {r.step}): building model and engine")
        else:
            self.set_state("starting", "building model and engine")
        try:
            self.session = TrainingSession(self)
            self.session.setup()
        except Exception as exc:
            self.set_state("failed", f"setup failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            self._teardown()
            return 4 if self.log_broken else 2
        self.set_state("running", "training")
        code = 0
        try:
            self.session.train()
            if self._stop_requested:
                self.set_state("stopping", "stop requested" + (": checkpointing" if self._checkpoint_at_stop else " without a checkpoint"))
            if self._checkpoint_at_stop:
                self.session.checkpoint("final")
            self.set_state("finished", f"stopped at step {self.step}" if self._stop_requested else f"completed {self.step} steps")
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
            self.set_state("failed", f"{type(exc).__name__}: {exc}")
            code = 1
        finally:
            self._teardown()
        return code

    def request_pause(self, reason: str) -> None:
        """From a command or an alert rule: pause at the next step boundary."""
        if self._pause_requested or self.state in ("paused", "pausing", "finished", "failed", "stopping"):
            return
        self._pause_requested = True
        self._pause_reason = reason
        self.set_state("pausing", reason)

    def request_stop(self) -> None:
        """From a signal handler: stop at the next boundary (checkpoint first)."""
        if self.state not in ("finished", "failed", "stopping"):
            self._stop_requested = True
            self._queue.put(C.Stop())

    def _teardown(self) -> None:
        if self.session is not None:
            self.session.close()

