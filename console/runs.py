"""Runs on this machine, read from their directories (run.json + the SQLite event log).

Reads only, through the protocol's event-log reader (`backend.protocol.eventlog`), so `ls`,
`status`, `replay` and `compare` see exactly what a live attach would.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.protocol.eventlog import EventLogError, EventLogMissing, EventLogReader
from backend.protocol.events import HostMemory, Hello
from backend.protocol.paths import LOCK_NAME, db_path, list_run_ids, run_dir, run_locked, socket_path
from backend.protocol import PROTOCOL_VERSION
from console.state import gb


class RunNotFound(LookupError):
    pass


#: what an ended run's state says, by how it ended
ENDED = ("completed", "stopped", "failed", "crashed")


@dataclass
class RunInfo:
    """A run as the operator should read it.

    `state` is the lifecycle state while a backend hosts the run (starting, running, pausing,
    paused, stopping) and how it ended otherwise: completed (all its steps), stopped (by an
    operator or a signal), failed (an error the backend reported: see `reason`) or crashed
    (the backend died without a word). `next` is the command that continues it, if any.
    """

    run_id: str
    state: str
    step: int
    reward: float | None
    profile: str
    pid: int | None
    alive: bool
    created: float | None
    reason: str = ""
    next: str = ""
    max_steps: int = 0  # the run's run.max_steps (0: unknown)
    duration_s: float | None = None  # from its start to its newest event (now, while alive)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def describe(self) -> str:
        """One sentence: what happened and what to do next."""
        text = f"{self.run_id} {self.state} at step {self.step}"
        if self.reason and self.state not in ("completed",) and not self.reason.startswith(f"{self.state} at step"):
            text += f": {self.reason}"
        elif self.state == "completed" and " (" in self.reason:  # what the end adds, e.g. updates skipped
            text += " (" + self.reason.split(" (", 1)[1]
        if self.next:
            text += f". Next: {self.next}"
        return text


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unwritable(exc: OSError) -> str:
    """What to say when a run cannot be started because the data dir cannot be written."""
    from backend.protocol.paths import home

    return (f"cannot write the data dir {home()} ({exc.strerror or exc}): a run needs a writable one; "
            "set RLC_HOME to a writable directory (ls, status and replay work on a read-only one)")


def open_log(run_id: str) -> EventLogReader | None:
    """The run's event log, read-only; None while the run has not created it yet.
    Raises `EventLogError` for a log that is there but cannot be read (corrupt, newer)."""
    try:
        return EventLogReader(db_path(run_id))
    except EventLogMissing:
        return None


def memory_hint(m: HostMemory | None) -> str:
    """Why a run that died without a word may have been killed for memory (the kernel's OOM killer
    sends SIGKILL: nothing is logged), from the last `host_memory` before it died; "" when that
    does not point at memory."""
    if m is None or m.total_mb <= 0:
        return ""
    tight = m.available_mb < 0.1 * m.total_mb
    need = m.step_need_mb
    if not tight and need is None and m.step == 0:  # died in the first step: nothing measured it yet
        return (f"; it died in its first step ({gb(m.available_mb)} were free before it): if the kernel killed it "
                f"for memory (`dmesg | grep -i oom`), start it with a larger training.micro_batches or fewer "
                f"training.prompts_per_step")
    if not tight and (need is None or m.available_mb >= 1.1 * need):
        return ""
    where = "the container's limit" if m.limit == "cgroup" else "the machine"
    needed = f", and a step needed +{gb(need)}" if need is not None else ""
    return (f"; likely killed for memory: at step {m.step} the run held {gb(m.rss_mb)} with {gb(m.available_mb)} free of "
            f"{gb(m.total_mb)} ({where}){needed}; resume with --set training.micro_batches=K (or fewer "
            f"training.prompts_per_step)")


def _has_checkpoint(rdir: Path, run_id: str, started: Any) -> bool:
    """Whether the run has a complete checkpoint to resume from (where `run --resume` looks)."""
    from backend.protocol.paths import checkpoint_root, has_complete_checkpoint

    output_dir = (((started.profile_data or {}).get("run") or {}).get("output_dir")) if started is not None else None
    try:
        return has_complete_checkpoint(checkpoint_root(output_dir, rdir, run_id))
    except OSError:
        return False


def info(run_id: str) -> RunInfo:
    rdir = run_dir(run_id)
    if not (rdir / "run.json").exists():
        raise RunNotFound(f"no run {run_id!r} under {rdir.parent}")
    try:
        meta = json.loads((rdir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        meta = {}
    state_ev = metrics = reward_from = started = newest = ran = memory = paused_by = None
    log_error = ""
    try:
        log = open_log(run_id)
    except EventLogError as exc:  # say so in `reason`; the rest comes from run.json
        log, log_error = None, str(exc)
    if log is not None:
        try:
            with log:
                state_ev = log.last("state_changed")
                metrics = log.last("step_metrics")
                memory = log.last("host_memory")
                resumed = log.last("run_resumed")
                if metrics is not None and resumed is not None and metrics.seq < resumed.seq and metrics.step > resumed.step:
                    # the newest steps belong to a crashed backend's lost timeline: the run stands at the checkpoint
                    lost = metrics.step - resumed.step  # the lost steps' metrics come last before the resume
                    metrics = next((m for m in log.latest("step_metrics", lost + 8, before_seq=resumed.seq)
                                    if m.step <= resumed.step), None)
                if metrics is not None and metrics.update_skipped:  # its reward measures nothing: the last real one
                    reward_from = next((m for m in log.latest("step_metrics", 20)
                                        if not m.update_skipped and m.step <= metrics.step), None)
                else:
                    reward_from = metrics
                started = log.last("run_started")
                if state_ev is not None and state_ev.state in ("paused", "pausing"):
                    paused_by = next((a for a in log.latest("alert", 20, before_seq=state_ev.seq)
                                      if a.severity == "critical" and a.state == "raised" and a.suggestion
                                      and a.step >= state_ev.step - 1), None)
                newest = log.newest_ts()
                ran = log.ran_s()
        except EventLogError as exc:
            log_error = str(exc)
    max_steps = int((((started.profile_data or {}).get("run") or {}).get("max_steps") or 0)) if started else 0
    pid = meta.get("pid")
    if (rdir / LOCK_NAME).exists():  # the backend's lock: held exactly while it lives
        alive = run_locked(rdir)
    else:
        alive = _pid_alive(pid) and socket_path(run_id).exists()
    state = state_ev.state if state_ev else meta.get("state", "unknown")
    reason = state_ev.reason if state_ev else log_error
    if meta.get("state") == "failed" and state != "failed":  # the log could not record the end
        state, reason = "failed", meta.get("reason", "") or reason
    step = metrics.step if metrics else 0
    resume = f"rl-console run --resume {run_id}"
    # `--resume` continues from a complete checkpoint: without one there is nothing to continue
    resumable = _has_checkpoint(rdir, run_id, started)
    nxt = ""
    if state == "finished":
        if reason.startswith("completed"):
            state, nxt = "completed", f"{resume} --max-steps N (N > {step}) to train further"
        else:
            state, nxt = "stopped", resume if resumable else "start a new run (it stopped before its first checkpoint)"
    elif state == "failed":
        nxt = f"fix the cause, then {resume}" if resumable else "fix the cause and start a new run"
    elif state in ("paused", "pausing") and alive:
        nxt = f"rl-console ctl {run_id} resume (or attach to look first)"
        if paused_by is not None:  # the alert that paused it says what to do first
            nxt = f"{paused_by.suggestion} (from a shell: rl-console ctl {run_id} resume | stop)"
    elif not alive:
        last = state
        state, reason = "crashed", f"the backend (pid {pid}) died while {last}; see {rdir / 'backend.log'}"
        reason += memory_hint(memory)
        if log_error:
            reason += f"; {log_error}"
        nxt = resume if resumable else "start a new run (it has no checkpoint to resume from)"
    return RunInfo(
        run_id=run_id,
        state=state,
        step=step,
        reward=reward_from.reward_mean if reward_from else None,
        profile=meta.get("profile", ""),
        pid=pid,
        alive=alive,
        created=meta.get("created"),
        reason=reason,
        next=nxt,
        max_steps=max_steps,
        duration_s=_duration(meta.get("created"), newest, ran, alive),
    )


def _duration(created: float | None, newest: float | None, ran: float | None, alive: bool) -> float | None:
    """How long the run has run: its backends' time by the log (the gaps between a stop and a
    resume left out), on to now while one is alive; from run.json's creation without a log."""
    import time

    if ran is not None and newest is not None:
        return ran + (max(0.0, time.time() - newest) if alive else 0.0)
    if not created:
        return None
    end = time.time() if alive else newest
    return max(0.0, end - created) if end else None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def fmt_started(created: float | None) -> str:
    import time

    return time.strftime("%m-%d %H:%M", time.localtime(created)) if created else "-"


def all_runs() -> list[RunInfo]:
    return [info(r) for r in list_run_ids()]


def resolve(name: str | None) -> str:
    """A run id from a name: None/'latest' = newest; else an exact id, a unique prefix or suffix,
    or else a unique piece of one."""
    ids = list_run_ids()
    if not ids:
        raise RunNotFound("no runs yet — start one with `rl-console` or `rl-console run --detach`")
    if name in (None, "", "latest"):
        return ids[-1]
    if name in ids:
        return name
    matches = [r for r in ids if r.startswith(name) or r.endswith(name)]
    if not matches:  # a piece from the middle (e.g. the time in demo-20261202-041515-ab12), if it names one run
        matches = [r for r in ids if name in r]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run matches {name!r} (see `rl-console ls`)")
    more = f", … ({len(matches) - 5} more)" if len(matches) > 5 else ""
    raise RunNotFound(f"{name!r} matches {len(matches)} runs: {', '.join(matches[:5])}{more}; give more of the id")


class ReplaySource:
    """The same interface as BackendClient, fed from a run's event log (no commands)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.sent: list[Any] = []

    def _log(self) -> EventLogReader | None:
        return open_log(self.run_id)

    async def connect(self) -> Hello:
        log = self._log()
        last = -1
        if log is not None:
            with log:
                last = log.last_seq()
        return Hello(protocol=PROTOCOL_VERSION, run_id=self.run_id, last_seq=last)

    async def events(self) -> AsyncIterator[Any]:
        log = self._log()
        if log is None:
            return
        with log:
            start = 0
            while start <= log.last_seq():  # to the newest event, also one appended meanwhile
                for event in list(log.read(start, start + 5000)):
                    yield event
                start += 5000

    def read_range(self, from_seq: int, to_seq: int) -> list[Any]:
        """Stored events with from_seq <= seq < to_seq (for the step scrubber)."""
        log = self._log()
        if log is None:
            return []
        with log:
            return list(log.read(from_seq, to_seq))

    async def send(self, command: Any) -> None:
        raise PermissionError("replay is read-only")

    async def close(self) -> None:
        return None


def locate(name: str) -> tuple[str, Path]:
    """(a label, the event log's path) for a run given as `attach`/`replay` take it (id, unique
    prefix/suffix, 'latest') or as a path: a run directory or an `events.db` (also one copied
    from another machine). Raises RunNotFound."""
    path = Path(name).expanduser()
    looks_like_path = os.sep in name or name.endswith(".db") or name in (".", "..")
    if not looks_like_path:
        try:
            run_id = resolve(name)
            return run_id, db_path(run_id)
        except RunNotFound:
            if not path.exists():
                raise
    if path.is_dir():
        if not (path / "events.db").is_file():
            raise RunNotFound(f"{path} is a directory without an events.db (not a run directory)")
        return path.resolve().name, path / "events.db"
    if path.is_file():
        return (path.resolve().parent.name if path.name == "events.db" else path.stem), path
    raise RunNotFound(f"no run or event log at {name!r}")


def backend_log_tail(run_id: str, lines: int = 15) -> str:
    path = run_dir(run_id) / "backend.log"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    keep = [l for l in text.splitlines() if l.strip()]
    return "\n".join(keep[-lines:])


def socket_for(run_id: str) -> Path:
    return socket_path(run_id)
