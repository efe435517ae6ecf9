"""The backend process: `python -m backend run [--profile PATH] ...`.

It hosts one run: the controller (training thread), the control socket (asyncio, main
thread) and the durable event log. The console starts it as its own process and talks to
it only through the socket, so closing the console or the SSH session never touches it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from backend.engine.gpus import pin_trainer_gpu
from backend.protocol import encode_event
from backend.protocol import events as E
from backend.protocol.paths import run_dir as run_dir_for
from backend.protocol.paths import RunLocked, lock_run, socket_path


def _parse_set(values: list[str]) -> dict:
    """`sampling.temperature=0.7` -> nested overrides for RunProfile(**overrides)."""
    import json

    out: dict = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected SECTION.FIELD=VALUE (e.g. --set sampling.temperature=0.7)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


class HeadlessPrinter:
    """One line per step (or per event with --json), plus progress while starting."""

    def __init__(self, json_mode: bool, stream=None, log_path: Path | None = None, run_id: str = "") -> None:
        self.json = json_mode
        self.log_path = log_path
        self.run_id = run_id
        self.out = stream or sys.stdout
        self.state = "starting"
        self.lock = threading.Lock()
        self.closed = False  # the reader went away (`... | head`): print nothing more, the run goes on

    def __call__(self, ev) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                if self.json:
                    self.out.write(encode_event(ev).decode())
                    self.out.flush()
                    return
                line = self.render(ev)
                if line:
                    self.out.write(line + "\n")
                    self.out.flush()
            except (BrokenPipeError, ValueError):  # closed pipe, or a stream already closed
                self.closed = True

    def render(self, ev) -> str | None:
        if isinstance(ev, E.StateChanged):
            self.state = ev.state
            where = f" (details: {self.log_path})" if ev.state == "failed" and self.log_path else ""
            if ev.state == "paused" and self.run_id:  # a headless run waits here: say how to go on
                where = f"\n  waiting: rl-console ctl {self.run_id} resume (or stop); rl-console attach {self.run_id} to look first"
            return f"[{ev.state}] {ev.reason}".rstrip() + where
        if isinstance(ev, E.Progress):
            frac = f" ({ev.current}/{ev.total})" if ev.total else ""
            return f"  … {ev.stage}: {ev.message}{frac}"
        if isinstance(ev, E.RunStarted):
            return f"run {ev.run_id}: model={ev.model} task={ev.task} engine={ev.engine} rewards={','.join(ev.reward_functions)}"
        if isinstance(ev, E.StepMetrics):
            t = ev.times
            if ev.update_skipped:
                return f"step {ev.step:5d}  update skipped: {ev.update_skipped}  [{self.state}]"
            return (
                f"step {ev.step:5d}  reward {ev.reward_mean:.3f} ±{ev.reward_std:.3f}  "
                f"tok/s {ev.tokens_per_s:8.0f}  loss {ev.loss if ev.loss is not None else float('nan'):+.4f}  "
                f"gen {t.generate * 1000:.0f}ms train {t.train * 1000:.0f}ms"
                + (f" (compiling {t.compile * 1000:.0f}ms)" if t.compile >= E.COMPILE_SHOWN_S else "")
                + f" sync {t.sync * 1000:.0f}ms  [{self.state}]"
            )
        if isinstance(ev, E.CommandResult):
            return f"  command {ev.command} ({ev.command_id}): {ev.status}" + (f" — {ev.reason}" if ev.reason else "")
        if isinstance(ev, E.ParamsApplied):
            return f"  params applied at step {ev.step}: {ev.changed}"
        if isinstance(ev, E.Alert):
            if ev.state == "cleared":  # the end of an alert is news, not a warning
                return f"  alert {ev.message}"
            return f"  ALERT [{ev.severity}] {ev.rule}: {ev.message}"
        if isinstance(ev, E.CheckpointSaved):
            return f"  checkpoint at step {ev.step}: {ev.path}"
        if isinstance(ev, E.WeightsSynced) and not ev.detail.startswith("step"):
            return f"  weights v{ev.version} synced in {ev.duration_s * 1000:.0f} ms ({ev.method}; {ev.detail})"
        if isinstance(ev, E.GpuStats) and not ev.available:
            return f"  GPU: none — {ev.reason}"
        if isinstance(ev, E.PolicyProbe):
            outs = " | ".join(repr(p.output[:40]) for p in ev.probes[:3]) + (" | …" if len(ev.probes) > 3 else "")
            unscored = "".join(f"\n    (not scored by {name}: {why})" for name, why in ev.unscored.items())
            return f"  probe v{ev.weight_version} (step {ev.step}): {outs}{unscored}"
        if isinstance(ev, E.TryResult):
            return f"  try ({ev.command_id}) at v{ev.weight_version}: {len(ev.completions)} completion(s) for {ev.prompt[:40]!r}"
        return None


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:7777 (port 0: any free port)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _write_token(rdir: Path) -> str:
    """A fresh token for this backend's TCP listener, readable only by the owner."""
    import secrets

    token = secrets.token_urlsafe(32)
    path = rdir / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


async def _serve(controller, sock: Path, done: threading.Event, listen: tuple[str, int] | None = None) -> None:
    import json

    from backend.server import ControlServer

    token = _write_token(controller.run_dir) if listen else ""
    server = ControlServer(controller, sock, listen=listen, token=token)
    await server.start()
    if server.tcp_address is not None:
        host, port = server.tcp_address
        (controller.run_dir / "listen.json").write_text(json.dumps({"host": host, "port": port}))
        print(f"rl-console: TCP control on {host}:{port} (token in {controller.run_dir / 'token'}); "
              f"attach with `rl-console attach tcp://{host}:{port} --token-file FILE`", file=sys.stderr, flush=True)
    try:
        while not done.is_set():
            await asyncio.sleep(0.1)
    finally:
        await server.stop()


class ResumeError(RuntimeError):
    """A run that cannot be resumed; the message says why and what to do."""


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _socket_alive(sock: Path) -> bool:
    import socket

    if not sock.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(sock))
            return True
        except OSError:
            return False


def prepare_resume(run_id: str, overrides: dict):
    """(profile, profile name, resume point) for `run --resume RUN`, or ResumeError."""
    from pydantic import ValidationError

    from backend.protocol.eventlog import EventLogError
    from backend.runstore import RunStore, read_run_meta
    from backend.settings import LIVE_PARAM_SECTIONS, load_profile
    from backend.training import checkpoints

    rdir = run_dir_for(run_id)
    if not (rdir / "events.db").exists():
        raise ResumeError(f"no run {run_id!r} under {rdir.parent}")
    if _socket_alive(socket_path(run_id)):
        raise ResumeError(f"run {run_id} is still running; attach to it with `rl-console attach {run_id}`")
    try:
        store = RunStore(rdir / "events.db", readonly=True)
    except EventLogError as exc:  # corrupt, or written by a newer rl-console: say so, touch nothing
        raise ResumeError(f"cannot resume {run_id}: {exc}") from None
    try:
        started = store.last("run_started")
        synced = store.last("weights_synced")
        last_state, last_metrics = store.last("state_changed"), store.last("step_metrics")
    finally:
        store.close()
    if started is None or not started.profile_data:
        raise ResumeError(f"run {run_id} never started training (no run_started in its log): start a new run instead")
    profile = load_profile(None, **_deep_merge(started.profile_data, overrides))
    root = checkpoints.root_for(profile.run.output_dir, rdir, run_id)
    point = checkpoints.latest(root)
    if point is None:
        raise ResumeError(
            f"run {run_id} has no complete checkpoint under {root} (they are saved every run.checkpoint_every steps, "
            "on `c` / `ctl checkpoint`, and at a clean stop)"
        )
    if point.step >= profile.run.max_steps:
        raise ResumeError(
            f"run {run_id} already completed {point.step} of {profile.run.max_steps} steps; "
            f"pass --max-steps N (N > {point.step}) to train further"
        )
    # keep the run's live parameters as they were at the checkpoint (an explicit --set wins),
    # and never reuse a weight version
    explicit = {name for section, fields in overrides.items() if isinstance(fields, dict) for name in fields
                if LIVE_PARAM_SECTIONS.get(name) == section}
    kept = {k: v for k, v in point.params.items() if k not in explicit}
    try:
        profile.set_live_params(kept)
    except ValidationError as exc:
        bad = ", ".join(f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}" for e in exc.errors())
        raise ResumeError(f"the checkpoint's live parameters are not valid any more ({bad}): "
                          f"override them with --set SECTION.FIELD=VALUE") from None
    if synced is not None:
        point.weight_version = max(point.weight_version, synced.version)
    point.previous_pid = int(read_run_meta(rdir).get("pid") or 0)
    point.previous_end = previous_end(last_state, last_metrics, point.previous_pid)
    return profile, started.profile, point


def previous_end(state: Any, metrics: Any, pid: int) -> str:
    """How the backend before a resume ended, in words, when it did not end cleanly (its log's
    last state and step); "" after a clean stop or finish, which the log already says."""
    who = f"the previous backend (pid {pid})" if pid else "the previous backend"
    step = metrics.step if metrics is not None else 0
    if state is None or state.state == "finished":  # (a stop finishes the run too)
        return ""
    if state.state == "failed":
        return f"{who} failed after step {step}: {state.reason or 'no reason logged'}"
    return (f"{who} ended without a word after step {step} (its last logged state: {state.state}): killed, out of "
            "memory, or the machine went down")


def quiet_library_warnings(log_path: Path) -> None:
    """Headless: what the libraries write to stderr (TRL's vLLM-version notice, `rollout_func`
    is experimental, Triton's and torch's warnings, vLLM's progress bars, tracebacks) goes to
    the run's backend.log; the terminal keeps rl-console's own lines, and a failure's line
    says where its traceback is."""
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)  # C libraries and subprocesses too, not only Python's sys.stderr
    os.close(fd)


def data_dir_error() -> str:
    """Why a run cannot write where runs live ($RLC_HOME), or "" when it can: tried, not
    guessed from file modes (root ignores them; a read-only mount does not)."""
    import tempfile

    from backend.protocol.paths import home, runs_dir

    try:
        runs_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=runs_dir(), prefix=".rlc-probe-"):
            pass
    except OSError as exc:
        return (f"cannot write the data dir {home()} ({exc.strerror or exc}): a run needs a writable one; "
                "set RLC_HOME to a writable directory (ls, status and replay work on a read-only one)")
    return ""


def _on_log_replaced(controller, message: str) -> None:
    """The event log's file was deleted or replaced and has been recreated (nothing lost):
    a critical alert, and the run pauses so the operator finds out what removes files."""
    def tell() -> None:
        try:
            controller.emit(E.Alert(
                rule="event_log_lost", severity="critical", message=message, step=controller.step,
                suggestion="find what deletes files under the data dir (a cleanup job, a script, a full `rm`), "
                           "then resume; the log was recreated with every event"))
            controller.request_pause(f"the event log file disappeared: {message}")
        except Exception:  # the log itself is safe; a failure here must not stop the run
            import traceback

            traceback.print_exc()

    # called under the log's lock (inside an append): tell from another thread
    threading.Thread(target=tell, name="rlc-log-replaced", daemon=True).start()


def cmd_run(args: argparse.Namespace) -> int:
    from backend import preflight
    from backend.controller import Controller
    from backend.protocol.paths import new_run_id
    from backend.runstore import RunStore
    from backend.settings import ProfileError, load_profile

    if why := data_dir_error():
        print(f"rl-console: {why}", file=sys.stderr)
        return 2
    try:
        overrides = _parse_set(args.set or [])
    except ValueError as exc:
        print(f"rl-console: {exc}", file=sys.stderr)
        return 2
    if args.max_steps is not None:
        overrides.setdefault("run", {})["max_steps"] = args.max_steps
    resume = _lock = None  # `_lock`: the run's lock descriptor, held open until this process exits
    try:
        if args.resume:
            if args.profile:
                raise ResumeError("--resume continues the run's own profile; change fields with --set SECTION.FIELD=VALUE")
            _lock = lock_run(run_dir_for(args.resume)) if (run_dir_for(args.resume) / "events.db").exists() else None
            profile, name, resume = prepare_resume(args.resume, overrides)
        else:
            profile = load_profile(args.profile, **overrides)
            name = str(args.profile) if args.profile else "embedded default"
            if profile.run.workdir is None:  # recorded with the run: its resume resolves paths the same way
                profile.run.workdir = os.getcwd()
    except (ProfileError, ResumeError, RunLocked) as exc:
        print(f"rl-console: {exc}", file=sys.stderr)
        return 2
    if found := preflight.problems(profile):  # before a run exists: a wrong path leaves nothing behind
        print(preflight.report(found), file=sys.stderr)
        return 2
    run_id = args.resume or args.run_id or new_run_id(profile.run.name)
    rdir = run_dir_for(run_id)
    rdir.mkdir(parents=True, exist_ok=True)
    os.chmod(rdir, 0o700)
    if not args.resume:
        try:
            _lock = lock_run(rdir)  # held (referenced) for the process's life: one backend per run; the OS releases it
        except RunLocked as exc:
            print(f"rl-console: {exc}", file=sys.stderr)
            return 2
    store = RunStore(rdir / "events.db")
    pinned = pin_trainer_gpu()  # before anything initialises CUDA: TRL trains on one GPU per process
    controller = Controller(profile, run_id=run_id, run_dir=rdir, profile_name=name, store=store, resume=resume)
    store.on_replaced = lambda message: _on_log_replaced(controller, message)
    if args.headless:
        quiet_library_warnings(rdir / "backend.log")
        stream = None
        if args.json:
            # stdout is the event stream: keep it for us, and send anything else that writes to
            # fd 1 (Ray, vLLM workers, C libraries) to stderr so the stream stays pure JSON lines
            stream = os.fdopen(os.dup(1), "w", buffering=1)
            os.dup2(2, 1)
            sys.stdout = sys.stderr
        controller.bus.subscribe(HeadlessPrinter(args.json, stream, rdir / "backend.log", run_id))
    if pinned and not args.json:
        print(f"rl-console: trainer on GPU {pinned[0]}; GPU(s) {','.join(pinned[1])} left to engines "
              "(a Ray engine's local cluster; an in-process engine shares the trainer's)", flush=True)
    if not args.json:
        how = f"resuming from {resume.path.name} (step {resume.step}); " if resume else ""
        print(f"rl-console: run {run_id} ({how}log {rdir / 'events.db'}, socket {socket_path(run_id)})", flush=True)

    done = threading.Event()
    result = {"code": 1}

    def train() -> None:
        try:
            result["code"] = controller.run()
        finally:
            done.set()

    def on_signal(signum, _frame) -> None:
        if getattr(on_signal, "seen", False):
            os._exit(130)
        on_signal.seen = True
        if args.headless and not args.json and signum == signal.SIGINT:  # the operator at the terminal: say what happens now
            how = ("once the engine is up (no step has run yet); Ctrl-C again exits at once"
                   if controller.state == "starting" else
                   "at the next step boundary, with a checkpoint; Ctrl-C again exits at once (the run is then left "
                   "crashed: resumable from its last checkpoint)")
            with contextlib.suppress(OSError, ValueError):  # (headless, stderr is the run's backend.log)
                print(f"rl-console: stopping {how}", flush=True)
        controller.request_stop(signal.Signals(signum).name)  # logged as 'command stop [SIGTERM] applied'

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed SSH session never stops the run

    worker = threading.Thread(target=train, name="rlc-train", daemon=True)
    worker.start()
    with contextlib.suppress(FileNotFoundError):
        (rdir / "listen.json").unlink()  # from an earlier backend of this run
    asyncio.run(_serve(controller, socket_path(run_id), done, args.listen))
    worker.join(timeout=5)
    store.close()
    return result["code"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="rl-console backend: hosts one GRPO run")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a profile (no --profile: the embedded default)")
    run.add_argument("--profile", type=Path, default=None)
    run.add_argument("--run-id", default=None)
    run.add_argument("--resume", metavar="RUN_ID", default=None, help="continue RUN_ID from its newest complete checkpoint")
    run.add_argument("--headless", action="store_true", help="print one line per step")
    run.add_argument("--json", action="store_true", help="with --headless: every event as one JSON line")
    run.add_argument("--max-steps", type=int, default=None)
    run.add_argument("--listen", type=parse_listen, metavar="HOST:PORT", default=None,
                     help="also accept control over TCP (token-protected; the token is written to <run dir>/token)")
    run.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a profile field")
    check = sub.add_parser("check", help="validate a profile and exit")
    check.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "check":
        from backend.settings import ProfileError, load_profile

        from backend import preflight

        try:
            p = load_profile(args.profile)
        except ProfileError as exc:
            print(f"rl-console: {exc}", file=sys.stderr)
            return 2
        if p.run.workdir is None:
            p.run.workdir = os.getcwd()
        if found := preflight.problems(p):
            print(preflight.report(found), file=sys.stderr)
            return 2
        print(f"profile ok: model={p.model.source} engine={p.engine.backend} steps={p.run.max_steps}")
        return 0
    return cmd_run(args)


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: with torch, TRL and vLLM loaded, collecting
    their modules takes ~3 s after the run is over (its engine shut down, its log closed).
    The atexit handlers still run first (logging, Ray, multiprocessing), then the streams are
    flushed."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
