"""`rl-console`: start, attach to, list, replay and steer GRPO runs.

The console never hosts a run: it starts the backend (`python -m backend run ...`) as its
own process in its own session and talks to it over the run's control socket, so closing
the console or the SSH session never stops the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.protocol import commands as C
from backend.protocol import explain
from backend.protocol.paths import new_run_id, run_dir, socket_path
from backend.protocol.params import LIVE_PARAMS, PARAMS, param_range
from console import runs

EPILOG = """\
examples:
  rl-console                                   start the embedded default run and watch it
  rl-console run --profile profiles/gpu-qwen2.5-0.5b.toml --detach
  rl-console run --headless --max-steps 50     no TUI: one line per step (--json: every event)
  rl-console run --resume RUN                  continue a crashed/stopped run from its newest checkpoint
  rl-console attach                            re-attach to the newest run (full history)
  rl-console ls                                runs on this machine: state, step, reward
  rl-console ctl latest pause                  pause|resume|resync|checkpoint|stop
  rl-console ctl latest set temperature=0.7 max_tokens=8
  rl-console ctl latest checkpoint --take      even while a console controls the run
  rl-console ctl latest try "What is 2+3?" --n 4 --set temperature=0.7
                                               sample the live engine between steps
  rl-console status latest --json
  rl-console run --listen 0.0.0.0:7777 --detach    also steerable over TCP (token in the run dir)
  rl-console attach tcp://gpu-box:7777 --token-file token
  rl-console replay RUN                        browse a finished run in the same screens
  rl-console compare RUN RUN...                curves, profile diff and commands of runs side by side

one console controls a run at a time; others are read-only until it detaches.
keys in the console: p pause/resume · w resync · e params · c checkpoint · s samples ·
d dashboard · l log · m metrics · / filter · ? help · q detach (the run goes on)
data: $RLC_HOME (default ~/.local/share/rl-console): runs/<id>/{events.db,control.sock,backend.log}
"""


def _die(msg: str, code: int = 2) -> int:
    print(f"rl-console: {msg}", file=sys.stderr)
    return code


# ---- starting a backend --------------------------------------------------
def _backend_cmd(args: argparse.Namespace, run_id: str, headless: bool) -> list[str]:
    cmd = [sys.executable, "-m", "backend", "run", "--run-id", run_id]
    if getattr(args, "resume", None):
        cmd += ["--resume", run_id]
    if args.profile:
        cmd += ["--profile", str(Path(args.profile).resolve())]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    if getattr(args, "listen", None):
        cmd += ["--listen", args.listen]
    for item in args.set or []:
        cmd += ["--set", item]
    if headless:
        cmd.append("--headless")
        if args.json:
            cmd.append("--json")
    return cmd


def _profile_name(args: argparse.Namespace) -> str:
    """The name in a new run's id: `run.name` where the run sets one (--set run.name=…, then
    RLC_RUN__NAME, then the profile file's [run] name, the order the backend reads them in),
    else the profile file's name, else "demo". Read here without loading the profile (the
    console does not import the backend's settings): a file that does not parse falls back to
    its name, and the backend reports what is wrong with it."""
    import tomllib

    for item in reversed(args.set or []):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "run.name" and value.strip():
            return value.strip().strip("'\"")
    if os.environ.get("RLC_RUN__NAME", "").strip():
        return os.environ["RLC_RUN__NAME"].strip()
    if not args.profile:
        return "demo"
    try:
        with open(args.profile, "rb") as fh:
            name = tomllib.load(fh).get("run", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        name = None
    return name.strip() if isinstance(name, str) and name.strip() else Path(args.profile).stem


def start_detached(args: argparse.Namespace, run_id: str | None = None) -> str:
    """Start the backend in its own session; return the run id once its socket is up."""
    if args.profile and not Path(args.profile).is_file():
        raise RuntimeError(f"profile file not found: {args.profile}")
    run_id = run_id or new_run_id(_profile_name(args))
    sock = socket_path(run_id)
    if sock.exists():  # left behind by a backend that was killed: the new one binds afresh
        sock.unlink()
    rdir = run_dir(run_id)
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        os.chmod(rdir, 0o700)
        log = open(rdir / "backend.log", "ab")
    except OSError as exc:  # a read-only or missing data dir: say so, not a traceback
        raise RuntimeError(runs.unwritable(exc)) from None
    proc = subprocess.Popen(
        _backend_cmd(args, run_id, headless=True),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own session: a closed terminal/SSH never signals it
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    t0 = time.monotonic()
    while not sock.exists():
        if proc.poll() is not None:
            tail = runs.backend_log_tail(run_id)
            if proc.returncode == 2 and not (rdir / "events.db").exists():
                shutil.rmtree(rdir, ignore_errors=True)  # refused before a run existed (a profile error): nothing to keep
                raise RuntimeError(tail.removeprefix("rl-console: "))
            raise RuntimeError(f"the backend exited ({proc.returncode}) before serving:\n{tail}")
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"the backend did not open {sock} within 120 s; see {rdir / 'backend.log'}")
        time.sleep(0.1)
    return run_id


# ---- the TUI -----------------------------------------------------------------
def _token(args: argparse.Namespace) -> str:
    """The TCP token: --token-file, else $RLC_TOKEN."""
    path = getattr(args, "token_file", None)
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    token = os.environ.get("RLC_TOKEN", "")
    if not token:
        raise ValueError("a tcp:// run needs its token: --token-file FILE (the run's <run dir>/token) or RLC_TOKEN")
    return token


def open_tui(run_id: str, *, read_only: bool = False, replay: bool = False, address: str | None = None, token: str = "") -> int:
    if why := tui_refusal():
        return _die(f"{why}; the run {run_id} is not affected.\n  follow it: rl-console status {run_id} | "
                    f"rl-console ctl {run_id} ...", 2)
    from console.app import RLConsoleApp, tune_gc
    from console.client import BackendClient

    tune_gc()
    if replay:
        try:  # refuse an unreadable log here, with its reason, not inside the TUI
            if (log := runs.open_log(run_id)) is not None:
                log.close()
        except runs.EventLogError as exc:
            return _die(str(exc), 1)
        source = runs.ReplaySource(run_id)
    else:
        source = BackendClient(address or socket_path(run_id), role="view" if read_only else "control", token=token)
    app = RLConsoleApp(source, run_id=run_id, read_only=read_only, replay=replay)
    app.run()
    if replay:
        with contextlib.suppress(runs.RunNotFound, OSError):
            if (info := runs.info(run_id)).ended:  # say how the run ended, as after a live attach
                print(info.describe())
        return 0
    try:
        info = None if address else runs.info(run_id)
    except runs.RunNotFound:
        info = None
    if info is None:
        print(f"detached from {run_id}. Re-attach: rl-console attach {run_id}")
    elif info.alive:  # it goes on as it stands: running, or held at a boundary until someone resumes it
        held = info.state in ("paused", "pausing")
        print(f"detached from {run_id}; it {'stays ' + info.state + ' at step ' + str(info.step) if held else 'keeps running'}. "
              + (f"Resume: rl-console ctl {run_id} resume; re-attach" if held else "Re-attach") + f": rl-console attach {run_id}")
    else:  # say what is true: it ended while we watched, or before
        print(info.describe())
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rl-console")
    except PackageNotFoundError:
        return "(not installed)"


def tui_refusal() -> str:
    """Why this terminal cannot show the console ("" when it can): no escape codes to a dumb
    terminal or into a pipe."""
    term = os.environ.get("TERM", "")
    if term in ("dumb", "unknown"):
        return f"this terminal cannot show the console (TERM={term})"
    if not sys.stdout.isatty():
        return "the console needs a terminal (output is not one)"
    return ""


# ---- subcommands -----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    if args.json and not args.headless:
        return _die("--json goes with --headless")
    if not (args.headless or args.detach) and (why := tui_refusal()):
        return _die(f"{why}: nothing started. Use --headless (one line per step) or --detach, then `rl-console status`")
    run_id = None
    if args.resume:
        if args.profile:
            return _die("--resume continues the run's own profile; change fields with --set SECTION.FIELD=VALUE")
        try:
            run_id = runs.resolve(args.resume)
            info = runs.info(run_id)
        except runs.RunNotFound as exc:
            return _die(str(exc))
        if info.alive:
            return _die(f"{run_id} is still running (pid {info.pid}); attach with `rl-console attach {run_id}`")
        args.resume = run_id
    if args.headless:
        run_id = run_id or new_run_id(_profile_name(args))
        cmd = _backend_cmd(args, run_id, headless=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # this process becomes the backend: Ctrl-C, `kill` and a closed terminal reach the run itself,
        # which stops cleanly and prints its last line, and its exit code is the command's
        os.execve(sys.executable, cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
    print("rl-console: starting the backend…", file=sys.stderr)
    try:
        run_id = start_detached(args, run_id)
    except RuntimeError as exc:
        return _die(str(exc))
    if args.detach:
        how = "resumed" if args.resume else "started"
        print(f"run {run_id} {how} in the background (log: {run_dir(run_id) / 'backend.log'})")
        print(f"  attach:  rl-console attach {run_id}")
        print(f"  control: rl-console ctl {run_id} pause|resume|resync|checkpoint|stop|set KEY=VALUE")
        if getattr(args, "listen", None):
            print(f"  remote:  rl-console attach tcp://{args.listen} --token-file {run_dir(run_id) / 'token'}"
                  "   (from another machine: the host's address, and a copy of the token file)")
        return 0
    return open_tui(run_id)


def cmd_attach(args: argparse.Namespace) -> int:
    if args.run and args.run.startswith("tcp://"):
        from console.client import ClientError, parse_tcp

        try:
            parse_tcp(args.run)
            token = _token(args)
        except (ValueError, ClientError) as exc:
            return _die(str(exc))
        return open_tui(args.run, read_only=args.read_only, address=args.run, token=token)
    try:
        run_id = runs.resolve(args.run)
        info = runs.info(run_id)
    except runs.RunNotFound as exc:
        return _die(str(exc))
    if not info.alive:
        print(f"rl-console: {run_id} is not running ({info.state}); opening its history read-only", file=sys.stderr)
        return open_tui(run_id, replay=True)
    return open_tui(run_id, read_only=args.read_only)


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        run_id = runs.resolve(args.run)
    except runs.RunNotFound as exc:
        return _die(str(exc))
    return open_tui(run_id, replay=True)


def cmd_ls(args: argparse.Namespace) -> int:
    infos = runs.all_runs()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=1))
        return 0
    if not infos:
        print("no runs yet — start one with `rl-console` or `rl-console run --detach`")
        return 0
    print(f"{'RUN':36} {'STATE':10} {'STEP/MAX':>11} {'REWARD':>7} {'STARTED':>11} {'TIME':>7}  PROFILE")
    for i in infos:
        reward = f"{i.reward:.3f}" if i.reward is not None else "-"
        steps = f"{i.step}/{i.max_steps}" if i.max_steps else str(i.step)
        print(f"{i.run_id:36} {i.state:10} {steps:>11} {reward:>7} {runs.fmt_started(i.created):>11} "
              f"{runs.fmt_duration(i.duration_s):>7}  {i.profile}")
        if i.state in ("failed", "crashed", "paused"):
            # wrapped, never cut: the reason often ends in the path of the log to read
            text = i.reason + (f" — next: {i.next}" if i.next else "")
            width = max(60, shutil.get_terminal_size((120, 24)).columns - 40)
            lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]
            print(f"{'':36} └ {lines[0]}")
            for more in lines[1:]:
                print(f"{'':36}   {more}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        info = runs.info(runs.resolve(args.run))
    except runs.RunNotFound as exc:
        return _die(str(exc))
    if args.json:
        print(json.dumps(info.as_dict()))
    else:
        reward = f"{info.reward:.3f}" if info.reward is not None else "-"
        steps = f"{info.step}/{info.max_steps}" if info.max_steps else str(info.step)
        print(f"{info.run_id}: {info.state}, step {steps}, reward {reward}, started {runs.fmt_started(info.created)}, "
              f"running for {runs.fmt_duration(info.duration_s)}, backend pid {info.pid}" if info.alive else
              f"{info.run_id}: {info.state}, step {steps}, reward {reward}, started {runs.fmt_started(info.created)}, "
              f"ran {runs.fmt_duration(info.duration_s)}, backend pid {info.pid} (not running)")
        if info.reason and info.state != "completed":
            print(f"  reason: {info.reason}")
        if info.next:
            print(f"  next:   {info.next}")
    return 0


def _parse_value(raw: str):
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        return raw
    if not math.isfinite(value):  # (NaN passes no range check and reads as out of range)
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def _assign(out: dict[str, Any], key: str, raw: str, where: str) -> None:
    """One KEY=VALUE of `where` into `out`: a key given twice is refused, not resolved silently."""
    if key in out:
        raise ValueError(f"{where}: {key!r} is given twice ({out[key]!r} and {raw!r}); give each once")
    try:
        out[key] = _parse_value(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: {key}={raw}: {exc}") from None


def build_command(action: str, assignments: list[str]):
    simple = {"pause": C.Pause, "resume": C.Resume, "resync": C.ResyncWeights, "checkpoint": C.Checkpoint, "stop": C.Stop}
    if action in simple:
        if assignments:
            raise ValueError(f"{action} takes no arguments")
        return simple[action]()
    if action == "set":
        if not assignments:
            raise ValueError("set needs KEY=VALUE pairs, e.g. set temperature=0.7")
        changes = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: expected KEY=VALUE")
            if key.strip() not in LIVE_PARAMS:
                raise ValueError(f"unknown parameter {key.strip()!r}; settable: "
                                 + ", ".join(f"{p.name} ({param_range(p.name)})" for p in PARAMS))
            _assign(changes, key.strip(), raw.strip(), "set")
        from pydantic import ValidationError

        try:
            return C.SetParams(**changes)
        except ValidationError as exc:
            raise ValueError(explain(exc)) from None
    raise ValueError(f"unknown action {action!r}: pause|resume|resync|checkpoint|stop|set")


#: what `ctl try --set` takes: the playground's sampling fields, as the registry declares them
TRY_SETTABLE: tuple[str, ...] = tuple(k for k in C.TryPrompt.model_fields if k in LIVE_PARAMS)


def build_try(assignments: list[str], n: int, sets: list[str], columns: list[str]):
    """`try PROMPT [--n N] [--set KEY=VALUE]... [--column NAME=VALUE]...` as a TryPrompt."""
    if len(assignments) == 1 and not assignments[0].strip():
        raise ValueError('try: the prompt is empty; give the text to sample, quoted: try "What is 2+3?"')
    if len(assignments) != 1:
        raise ValueError('try needs exactly one prompt, quoted: try "What is 2+3?"')
    settable = TRY_SETTABLE
    fields: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or key.strip() not in settable:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(settable)}")
        _assign(fields, key.strip(), raw.strip(), "--set")
    cols = C.parse_columns(columns)
    from pydantic import ValidationError

    try:
        return C.TryPrompt(prompt=assignments[0], n=n, columns=cols, **fields)
    except ValidationError as exc:
        raise ValueError(explain(exc)) from None


def print_try(run_id: str, result: Any) -> None:
    p = result.params
    print(f"{run_id}: weight version {result.weight_version} (after step {result.step}), "
          f"{len(result.completions)} completion(s) in {result.duration_s:.2f} s; "
          + ", ".join(f"{k}={v}" for k, v in p.items()))
    for i, c in enumerate(result.completions, 1):
        scored = ", ".join([f"{k} {v:.3g}" for k, v in c.rewards.items() if v is not None]
                           + [f"{k} not scored" for k, v in c.rewards.items() if v is None])
        total = f"{c.reward:.3g}" if any(v is not None for v in c.rewards.values()) or not c.rewards else "–"
        print(f"--- [{i}] reward {total}" + (f" ({scored})" if scored else " (not scored)")
              + f", {c.length} tokens" + (", cut at max_tokens" if c.truncated else ""))
        print(c.text if c.text.strip() else f"(empty: the completion ended after {c.length} token{'s' * (c.length != 1)})")
    for name, why in result.unscored.items():
        print(f"not scored by {name}: {why}")


def cmd_ctl(args: argparse.Namespace) -> int:
    from console.client import ClientError, call, call_until_done

    try:
        if args.action == "try":
            command = build_try(args.assignments, args.n, args.set or [], args.column or [])
        elif args.n != 1 or args.set or args.column:
            raise ValueError("--n, --set and --column belong to `try`")
        else:
            command = build_command(args.action, args.assignments)
        if args.run.startswith("tcp://"):
            run_id, address, token = args.run, args.run, _token(args)
        else:
            run_id = runs.resolve(args.run)
            address, token = socket_path(run_id), ""
            info = runs.info(run_id)
            if not info.alive:  # nobody to send it to: say why, and what would continue the run
                return _die(f"cannot {args.action}: {info.describe()}", 1)
    except (runs.RunNotFound, ValueError) as exc:
        return _die(str(exc))
    if args.action == "try":
        timeout = args.timeout if args.timeout is not None else 120.0
        try:
            result, answers = asyncio.run(call_until_done(address, command, timeout=timeout, take=args.take, token=token))
        except (TimeoutError, asyncio.TimeoutError):
            return _die(f"{run_id}: no answer within {timeout:g} s (a try is served at the next step boundary; "
                        "raise --timeout for long steps)", 1)
        except (ClientError, OSError) as exc:
            return _die(f"{run_id}: {exc or type(exc).__name__}", 1)
        tried = next((a for a in answers if getattr(a, "kind", "") == "try_result"), None)
        if result.status != "applied" or tried is None:  # the backend's answer, on stdout as for every command
            print(result.model_dump_json() if args.json else
                  f"{run_id}: try {result.status}" + (f" — {result.reason}" if result.reason else ""))
            return 1
        print(tried.model_dump_json() if args.json else "", end="\n" if args.json else "")
        if not args.json:
            print_try(run_id, tried)
        return 0
    try:
        if args.action == "resume":  # a paused run answers at once: applied, or failed with why it stays paused
            try:
                result, _ = asyncio.run(call_until_done(address, command, timeout=args.timeout or 15.0, take=args.take,
                                                        token=token))
            except (TimeoutError, asyncio.TimeoutError):  # still pausing: it resumes at the step boundary
                print(f"{run_id}: resume accepted (the run is still pausing: it goes on at the step boundary)")
                return 0
        else:
            result = asyncio.run(call(address, command, timeout=args.timeout or 10.0, take=args.take, token=token))
    except (ClientError, TimeoutError, asyncio.TimeoutError, OSError) as exc:
        return _die(f"{run_id}: {exc or type(exc).__name__}", 1)
    if args.json:
        print(result.model_dump_json())
    else:
        print(f"{run_id}: {command.kind} {result.status}" + (f" — {result.reason}" if result.reason else ""))
    return 0 if result.status in ("accepted", "applied") else 1


class SameRun(ValueError):
    """Two names given to `compare` are one run."""


def compare_feed(names: list[str]) -> Any:
    """The runs `names` name, loaded for `compare` (a `compare.Feed`: a run of this machine is
    followed through its lifecycle while it is live; a copied log is read as it is).
    Raises runs.RunNotFound, SameRun, runs.EventLogError."""
    from console import compare

    loaded: list[compare.RunCurves] = []
    status: list[Callable[[], tuple[str, bool]] | None] = []
    seen: dict[str, str] = {}
    for name in names:
        label, path = runs.locate(name)
        where = str(Path(path).resolve())
        if where in seen:
            raise SameRun(f"{name!r} is the same run as {seen[where]!r}: give different runs")
        seen[where] = name
        probe: Callable[[], tuple[str, bool]] | None = None
        state, live = "", False
        if Path(path).resolve() == runs.db_path(label).resolve():  # a run of this machine: its lifecycle state
            def probe(run_id: str = label) -> tuple[str, bool]:
                info = runs.info(run_id)
                return info.state, info.alive
            try:
                state, live = probe()
            except runs.RunNotFound:
                probe = None
        while label in [r.label for r in loaded]:  # two copied logs from same-named run dirs
            label += "'"
        loaded.append(compare.load(label, path, state=state, live=live))
        status.append(probe)
    return compare.Feed(loaded, status)


def cmd_compare(args: argparse.Namespace) -> int:
    from console import compare

    if len(args.runs) < 2:
        return _die(f"compare needs at least two runs (got {len(args.runs)}); see `rl-console ls`")
    try:
        feed = compare_feed(args.runs)
        report = feed.report()
    except (runs.RunNotFound, SameRun) as exc:
        return _die(str(exc))
    except (runs.EventLogError, compare.CompareError) as exc:
        return _die(str(exc), 1)
    if args.json:
        print(json.dumps(report, indent=1))
    elif args.table or not sys.stdout.isatty() or os.environ.get("TERM", "") in ("dumb", "unknown"):
        print(compare.render_table(report))
    elif args.no_tui or not sys.stdin.isatty():
        from rich.console import Console

        compare.render_rich(report, Console())
    else:  # a terminal: the interactive view (live runs refresh in it)
        from console.compare_app import CompareApp

        CompareApp(feed, report).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl-console",
        description="Watch and steer live GRPO runs (TRL + vLLM). With no command: start the embedded default run and open the console.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rl-console {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start a run (default: the embedded demo) and open the console")
    run.add_argument("--profile", type=Path, help="TOML run profile (see profiles/); default: the embedded demo")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="start in the background and print how to attach")
    mode.add_argument("--headless", action="store_true", help="no TUI: print one line per step")
    run.add_argument("--json", action="store_true", help="with --headless: every event as one JSON line")
    run.add_argument("--max-steps", type=int, help="override run.max_steps")
    run.add_argument("--listen", metavar="HOST:PORT", help="also accept control over TCP, token-protected "
                     "(token in the run's directory; off unless given)")
    run.add_argument("--resume", metavar="RUN", help="continue RUN (id, prefix or 'latest') from its newest checkpoint: "
                     "same data order, weights re-synced and verified, same event log")
    run.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a profile field (repeatable)")
    run.set_defaults(func=cmd_run)

    att = sub.add_parser("attach", help="re-attach to a live run (newest by default) with its full history")
    att.add_argument("run", nargs="?", help="run id, unique prefix/suffix/piece, 'latest', or tcp://HOST:PORT (a run started with --listen)")
    att.add_argument("--token-file", metavar="FILE", help="for tcp://: the run's token file (default: $RLC_TOKEN)")
    att.add_argument("--read-only", action="store_true",
                     help="watch only: the backend refuses this console's commands, and it never takes control")
    att.set_defaults(func=cmd_attach)

    ls = sub.add_parser("ls", help="list runs with state, step and reward")
    ls.add_argument("--json", action="store_true", help="one JSON object per run (state, step, reward, reason, next)")
    ls.set_defaults(func=cmd_ls)

    st = sub.add_parser("status", help="one run's state (for scripts: --json)")
    st.add_argument("run", nargs="?", default="latest")
    st.add_argument("--json", action="store_true", help="the run's state as one JSON object")
    st.set_defaults(func=cmd_status)

    ctl = sub.add_parser("ctl", help="send a command: pause|resume|resync|checkpoint|stop|set KEY=VALUE ...|try PROMPT",
                         description="Send one command to a live run and print the backend's answer.",
                         epilog="settable with `set` (applied at the next step boundary):\n" + "\n".join(
                             f"  {p.name:16} {param_range(p.name):12} {p.description}" for p in PARAMS)
                         + "\n\ntry PROMPT: sample the live engine at its current weights between two steps and print the\n"
                           "completions, scored by the run's reward functions (--column gives the dataset columns they\n"
                           "read, e.g. --column answer=5). The run's steps and data are not touched; it is logged.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ctl.add_argument("run", help="run id, unique prefix/suffix/piece, 'latest', or tcp://HOST:PORT")
    ctl.add_argument("--token-file", metavar="FILE", help="for tcp://: the run's token file (default: $RLC_TOKEN)")
    ctl.add_argument("action", choices=["pause", "resume", "resync", "checkpoint", "stop", "set", "try"])
    ctl.add_argument("assignments", nargs="*", metavar="KEY=VALUE|PROMPT")
    ctl.add_argument("--json", action="store_true", help="print the backend's answer as JSON (CommandResult; TryResult for try)")
    ctl.add_argument("--timeout", type=_positive_seconds, default=None,
                     help="seconds to wait for the answer (default 10; try: 120)")
    ctl.add_argument("--n", type=int, default=1, help="try: completions to sample (1-64, default 1)")
    ctl.add_argument("--set", action="append", metavar="KEY=VALUE", help="try: " + "|".join(TRY_SETTABLE) + " "
                     "for this request only (temperature=0: greedy, which gives one answer: --n 1); "
                     "default: the run's live values")
    ctl.add_argument("--column", action="append", metavar="NAME=VALUE", help="try: a dataset column the reward functions read")
    ctl.add_argument("--take", action="store_true",
                     help="send even while a console controls the run (it gets control back right after)")
    ctl.set_defaults(func=cmd_ctl)

    cmp = sub.add_parser(
        "compare", help="compare runs: curves on one step axis, profile diff, operator commands",
        description="Compare two or more runs from their event logs (finished or live): reward (total and per\n"
                    "reward function), KL, completion length and step time on one step axis, the profile fields\n"
                    "they differ in, and the operator commands marked at the first step each affected.",
        epilog="RUN: a run id, a unique prefix, suffix or piece of one, 'latest', or a path to a run directory or its\n"
               "events.db (e.g. copied from another machine).\n\n"
               "output: on a terminal, an interactive view: one metric at a time with every run's curve\n"
               "overlaid, the commands marked at the step they took effect, the profile diff; live runs\n"
               "refresh (←/→ metric, z zoom, ? keys, q quit). --no-tui prints it instead: a sparkline per\n"
               "metric with the runs on one scale (▲ = a command took effect, ↻ = resumed). Piped, or with\n"
               "--table, plain columns (one row per step and run); --json, the report documented in\n"
               "docs/protocol.md ('compare' report, version 1).\n\n"
               "exit status: 0 compared; 1 a run has no steps yet or its log is unreadable; 2 bad arguments\n"
               "(unknown run, fewer than two runs, a run given twice).\n\n"
               "examples:\n"
               "  rl-console compare 20261201-101500 20261201-103000\n"
               "  rl-console compare latest ~/old-box/runs/20261120-090000-demo --json | jq '.profile_diff'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("runs", nargs="*", metavar="RUN", help="two or more runs")
    out = cmp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the whole comparison as one JSON object")
    out.add_argument("--table", action="store_true", help="plain columns even on a terminal")
    out.add_argument("--no-tui", action="store_true", help="on a terminal: print the comparison (sparklines) "
                     "instead of opening the interactive view")
    cmp.set_defaults(func=cmd_compare)

    rp = sub.add_parser(
        "replay", help="browse a run's recorded history in the same screens",
        description="Open a run's recorded history in the console's screens, read-only, "
                    "and move through it step by step: every screen shows the run as it stood at the chosen step.",
        epilog="keys (besides the console's own screen keys):\n"
               "  [ / ]    one step back / forward\n"
               "  { / }    ten steps back / forward\n"
               "  < / >    the first / the last step\n"
               "  q        quit",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("run", nargs="?", default="latest", help="run id, a unique prefix of one, or latest (default)")
    rp.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `rl-console`: the embedded default, in the console
        args = parser.parse_args(["run"])
    try:
        return args.func(args)
    except BrokenPipeError:  # `rl-console ls --json | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail either
        return 0


if __name__ == "__main__":
    sys.exit(main())
