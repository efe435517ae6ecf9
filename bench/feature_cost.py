"""What does each of rl-console's features cost per GRPO step? Measured inside the process.

`bench/overhead.py` compares whole runs by wall clock; on a shared 2-core machine the load of
others moves those times by more than the console costs. This bench measures the console's
own code where it runs: a child process starts `rl-console run --headless` (the embedded
default profile) with timers wrapped around each feature's functions, and records per step
the CPU time of the calling thread (`time.thread_time`) and the wall time each one took,
exclusive of what it calls that is timed separately (a feature's events are the event log's
and the fan-out's cost, not the feature's). Work the bare loop does too (generation, TRL's
scoring and update, the reward functions, the engine's weight load) is not counted.

Features and where they are timed:

  groups (join, SampleGroup events)   StepLoop.scored and .agreement minus the rows below
  signals: diversity/repetition       report.diversity
  signals: reward hacking             report.hacking
  token view (decode)                 report._token_view (steps that measure agreement)
  log-prob agreement (trainer pass)   trainer.logprob_gap and LossLogps.add (every telemetry.logprob_diff_every steps)
  log-prob agreement (engine)         generate time on measuring steps minus the others' (from the log)
  policy probes                       StepLoop.probe, everything in it (every telemetry.probe_every steps)
  step metrics                        StepLoop.on_log minus alerts and events
  alerts                              AlertMonitor.on_metrics minus events
  event log (encode + SQLite)         RunStore.append_many
  fan-out to clients (encode + wake)  ControlServer._on_event
  headless printer                    HeadlessPrinter.__call__
  event bus                           EventBus.emit_many minus the three above
  sync: fingerprint                   weight_sync.fingerprint
  sync: deadline (watchdog)           TrainingSession._push_with_deadline minus the engine's load
  sync: bookkeeping                   StepLoop.sync minus the rows above, the canary, the load
  sync: canary                        TrainingSession.verify_canary (every engine.verify_every syncs)
  reward: timeout thread hand-off     RewardRecorder._run minus the reward function (a user's functions;
                                      the embedded task's run inline)
  reward: recording                   the recorder's wrapper minus the two above
  boundary (commands, disk check)     StepLoop.boundary
  step hooks (other)                  before_rollout, on_step_end minus the rows above
  gradient guard                      StepLoop.on_pre_optimizer_step
  checkpoints (scheduled)             StepLoop.checkpoint, everything in it (every run.checkpoint_every steps)

The sample groups' events, the signals and their share of the event log run on the `rlc-report`
worker beside the backward (`telemetry.report_behind_update`); the total sums both threads,
and "CPU per step by thread" shows the worker's part.

Each feature's cost is its mean per step over the steps after the warm-up (features that run
every N steps are spread over the steps), as the median and range over rounds, and as a share
of the bare loop's median step (bench/overhead.py's (a), run in the same rounds). It also
reports CPU per step by thread (from /proc: the training thread, the server's event loop, the
reward and sync threads, vLLM's and torch's), the whole process's CPU per step, and, for the
features a profile can switch off, the wall clock and CPU per step with the feature off,
run alternately with the default in every round (on a shared machine, read those with the
box's load: they move with it).

  .venv/bin/python bench/feature_cost.py [--steps 100] [--rounds 3] [--ab probes,logprob] [--no-bare]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 20

#: features a profile can switch off: name -> --set overrides
SWITCHES = {
    "probes": ["telemetry.probe_every=0"],
    "logprob": ["telemetry.logprob_diff_every=0"],
    "token_view": ["telemetry.token_view_groups=0"],
    "checkpoints": ["run.checkpoint_every=0"],
    "canary": ["engine.verify_every=0"],
    # not a feature: the step's report built inline on the training thread instead of beside the backward
    "report_behind": ["telemetry.report_behind_update=false"],
}

ORDER = [
    "groups (join, SampleGroup events)",
    "signals: diversity/repetition",
    "signals: reward hacking",
    "token view (decode)",
    "log-prob agreement (trainer pass)",
    "log-prob agreement (engine log-probs)",
    "policy probes",
    "step metrics",
    "alerts",
    "event log (encode + SQLite)",
    "fan-out to clients (encode + wake)",
    "headless printer",
    "event bus",
    "sync: fingerprint",
    "sync: deadline (watchdog)",
    "sync: bookkeeping",
    "sync: canary",
    "reward: timeout thread hand-off",
    "reward: recording",
    "boundary (commands, disk check)",
    "step hooks (other)",
    "gradient guard",
    "checkpoints (scheduled)",
]


# ---- the child: a headless run with timers ----------------------------------------------------

class Meter:
    """Exclusive CPU and wall time per feature on each thread; flushed once per step."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.acc: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}
        self.steps: list[dict] = []
        self.worker_wall: dict[str, float] = {}  # the work a hand-off waited for, timed on the worker
        self.t_last = time.perf_counter()
        self.sched_last = _thread_schedstat()

    def _stack(self) -> list:
        st = getattr(self.local, "stack", None)
        if st is None:
            st = self.local.stack = []
        return st

    def wrap(self, owner, name: str, feature: str, **how) -> None:
        """Time `owner.name` as `feature` (see `timed`)."""
        setattr(owner, name, self.timed(getattr(owner, name), feature, **how))

    def timed(self, orig, feature: str, *, inclusive: bool = False, minus_worker: str = ""):
        """`orig`, timed as `feature`. inclusive: everything it calls counts as its own (nothing
        under it is recorded apart). minus_worker: subtract the wall time a worker thread recorded
        under that key meanwhile (a hand-off: what remains is the hand-off's own latency)."""
        meter = self

        def timed(*a, **k):
            st = meter._stack()
            if st and st[-1][0] is None:  # under an inclusive feature: not recorded apart
                return orig(*a, **k)
            frame = [None if inclusive else feature, 0.0, 0.0]  # [feature or None, child cpu, child wall]
            st.append(frame)
            if minus_worker:
                meter.worker_wall[minus_worker] = 0.0
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
                st.pop()
                if st:
                    st[-1][1] += cpu
                    st[-1][2] += wall
                own_wall = wall - frame[2] - (meter.worker_wall.get(minus_worker, 0.0) if minus_worker else 0.0)
                meter.add(feature, cpu - frame[1], max(0.0, own_wall))

        timed.__wrapped__ = orig
        for attr in ("__name__", "__qualname__", "__doc__"):
            if hasattr(orig, attr):
                setattr(timed, attr, getattr(orig, attr))
        return timed

    def worker(self, owner, name: str, key: str) -> None:
        """`owner.name` runs on a worker thread: record its wall time under `key` (not a feature)."""
        orig = getattr(owner, name)
        meter = self

        def timed(*a, **k):
            w0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                meter.worker_wall[key] = meter.worker_wall.get(key, 0.0) + time.perf_counter() - w0

        setattr(owner, name, timed)

    def add(self, feature: str, cpu: float, wall: float) -> None:
        with self.lock:
            a = self.acc.setdefault(feature, [0.0, 0.0])
            a[0] += cpu
            a[1] += wall

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def end_step(self, step: int) -> None:
        now = time.perf_counter()
        sched = _thread_schedstat()
        threads: dict[str, float] = {}
        for tid, (name, ns) in sched.items():
            before = self.sched_last.get(tid, (name, 0))[1]
            threads[name] = threads.get(name, 0.0) + (ns - before) / 1e9
        with self.lock:
            acc, self.acc = self.acc, {}
            counts, self.counts = self.counts, {}
        self.steps.append({"step": step, "wall": now - self.t_last, "features": acc, "threads": threads, "counts": counts})
        self.t_last, self.sched_last = now, sched


def _thread_schedstat() -> dict[int, tuple[str, int]]:
    """tid -> (thread group name, ns on a CPU so far) for this process's threads."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            name = names.get(int(tid))
            if name is None:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = "native: " + f.read().strip()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (_thread_group(name), ns)
    return out


def _thread_group(name: str) -> str:
    if name == "MainThread":
        return "server event loop (MainThread)"
    for prefix in ("rlc-train", "rlc-report", "rlc-reward", "rlc-sync", "rlc-rollout"):
        if name.startswith(prefix):
            return prefix
    if name.startswith("native: "):
        return name.rstrip("0123456789_-")
    return "other Python threads"


def instrument(meter: Meter) -> None:
    import backend.__main__ as cli
    from backend import bus, runstore, server
    from backend.engine import weight_sync
    from backend.engine.local import LocalVLLMEngine
    from backend.telemetry.alerts import AlertMonitor
    from backend.training import report, rewards, session, step, trainer

    W = meter.wrap
    W(step.StepLoop, "scored", "groups (join, SampleGroup events)")
    if hasattr(step.StepLoop, "agreement"):  # a measuring step's groups, logged once the loss gave its log-probs
        W(step.StepLoop, "agreement", "groups (join, SampleGroup events)")
    if hasattr(report, "diversity"):
        W(report, "diversity", "signals: diversity/repetition")
        W(report, "hacking", "signals: reward hacking")
    else:  # an older tree (one function for both): all of it under the first row
        W(report, "signals", "signals: diversity/repetition")
    W(report, "_token_view", "token view (decode)")
    W(trainer, "logprob_gap", "log-prob agreement (trainer pass)")
    if hasattr(trainer, "LossLogps"):  # the trainer's log-probs read from the loss's forward: the copy into place
        W(trainer.LossLogps, "add", "log-prob agreement (trainer pass)")
    W(step.StepLoop, "probe", "policy probes", inclusive=True)
    W(step.StepLoop, "on_log", "step metrics")
    W(AlertMonitor, "on_metrics", "alerts")
    W(runstore.RunStore, "append_many", "event log (encode + SQLite)")
    W(server.ControlServer, "_on_event", "fan-out to clients (encode + wake)")
    W(cli.HeadlessPrinter, "__call__", "headless printer")
    W(bus.EventBus, "emit_many", "event bus")
    W(weight_sync, "fingerprint", "sync: fingerprint")
    W(session.TrainingSession, "_push_with_deadline", "sync: deadline (watchdog)")
    W(step.StepLoop, "sync", "sync: bookkeeping")
    W(session.TrainingSession, "verify_canary", "sync: canary", inclusive=True)
    W(step.StepLoop, "boundary", "boundary (commands, disk check)")
    W(step.StepLoop, "before_rollout", "step hooks (other)")
    W(step.StepLoop, "on_step_end", "step hooks (other)")
    W(step.StepLoop, "on_pre_optimizer_step", "gradient guard")
    W(step.StepLoop, "checkpoint", "checkpoints (scheduled)", inclusive=True)
    # the bare loop's own work under the features above: subtracted, never counted
    W(LocalVLLMEngine, "generate", "(engine: generate)")
    W(LocalVLLMEngine, "push_weights", "(engine: weight load)")

    orig_wrap = rewards.RewardRecorder.wrap

    def wrap(self, func, **kw):  # the recorder's wrapper around each reward function, timed
        return meter.timed(orig_wrap(self, func, **kw), "reward: recording")

    rewards.RewardRecorder.wrap = wrap
    orig_run = rewards.RewardRecorder._run

    def run_timed(self, func, kwargs, bounded):
        caller = threading.get_ident()
        inner = meter.timed(func, "(reward functions)")

        def timed(**kw):  # on the worker thread: its wall time is what the hand-off waited for
            w0 = time.perf_counter()
            try:
                return inner(**kw)
            finally:
                if threading.get_ident() != caller:
                    meter.worker_wall["reward"] = meter.worker_wall.get("reward", 0.0) + time.perf_counter() - w0
        return orig_run(self, timed, kwargs, bounded)

    rewards.RewardRecorder._run = meter.timed(run_timed, "reward: timeout thread hand-off", minus_worker="reward")

    # thread hand-offs: work handed to another thread and waited for (the executors), and wakes
    # of the server's event loop from the training thread
    import asyncio.base_events
    import concurrent.futures.thread

    submit = concurrent.futures.thread.ThreadPoolExecutor.submit

    def counted_submit(self, fn, *a, **k):
        meter.count("hand-offs: " + (getattr(self, "_thread_name_prefix", "") or "executor"))
        return submit(self, fn, *a, **k)

    concurrent.futures.thread.ThreadPoolExecutor.submit = counted_submit
    wake = asyncio.base_events.BaseEventLoop.call_soon_threadsafe

    def counted_wake(self, *a, **k):
        if threading.current_thread() is not threading.main_thread():
            meter.count("hand-offs: event loop wakes")
        return wake(self, *a, **k)

    asyncio.base_events.BaseEventLoop.call_soon_threadsafe = counted_wake

    on_log = step.StepLoop.on_log

    def on_log_then_flush(self, state, logs):
        try:
            return on_log(self, state, logs)
        finally:
            meter.end_step(self.step_now)

    step.StepLoop.on_log = on_log_then_flush


def child(out: Path, argv: list[str]) -> int:
    meter = Meter()
    instrument(meter)
    import backend.__main__ as cli

    code = cli.main(argv)
    out.write_text(json.dumps({"code": code, "steps": meter.steps}))
    return code


# ---- the parent: rounds, tables ---------------------------------------------------------------

def run_instrumented(steps: int, sets: list[str], env) -> dict:
    from backend.protocol.eventlog import EventLogReader
    from backend.protocol.paths import db_path, new_run_id

    run_id = new_run_id("bench-features")
    out = Path(tempfile.mkdtemp()) / "features.json"
    argv = ["run", "--headless", "--run-id", run_id, "--max-steps", str(steps)] + [x for s in sets for x in ("--set", s)]
    proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"instrumented run exited {proc.returncode}: {proc.stderr[-2000:]}")
    res = json.loads(out.read_text())
    with EventLogReader(db_path(run_id)) as log:
        res["metrics"] = [{"step": m.step, "generate": m.times.generate, "total": m.times.total,
                           "measured": m.logprob_diff_mean is not None} for m in log.read(kinds=("step_metrics",))]
    return res


def per_step_means(res: dict) -> dict[str, tuple[float, float]]:
    """feature -> (CPU s, wall s) per step, mean over the steps after the warm-up."""
    rows = [s for s in res["steps"] if s["step"] > WARMUP]
    n = max(1, len(rows))
    out: dict[str, tuple[float, float]] = {}
    for s in rows:
        for f, (cpu, wall) in s["features"].items():
            c, w = out.get(f, (0.0, 0.0))
            out[f] = (c + cpu / n, w + wall / n)
    # the engine's log-probs on the steps that measure agreement: their extra generate time
    m = [x for x in res["metrics"] if x["step"] > WARMUP]
    on = [x["generate"] for x in m if x["measured"]]
    off = [x["generate"] for x in m if not x["measured"]]
    if on and off:
        extra = (statistics.median(on) - statistics.median(off)) * len(on) / len(m)
        out["log-prob agreement (engine log-probs)"] = (extra, extra)  # wall; the engine's CPU moves with it
    return out


def counts_per_step(res: dict) -> dict[str, float]:
    rows = [s for s in res["steps"] if s["step"] > WARMUP]
    names = {k for s in rows for k in s["counts"]}
    return {k: sum(s["counts"].get(k, 0) for s in rows) / max(1, len(rows)) for k in names}


def threads_per_step(res: dict) -> dict[str, float]:
    rows = [s for s in res["steps"] if s["step"] > WARMUP]
    names = {k for s in rows for k in s["threads"]}
    return {k: statistics.median(s["threads"].get(k, 0.0) for s in rows) for k in names}


def walls(res: dict) -> tuple[float, float, float]:
    """(median, mean) wall s per step between the step ends as the child saw them (probes and
    checkpoints included), and the median process CPU s per step."""
    rows = [s for s in res["steps"] if s["step"] > WARMUP]
    w = [s["wall"] for s in rows]
    cpu = [sum(s["threads"].values()) for s in rows]
    return statistics.median(w), statistics.fmean(w), statistics.median(cpu)


def fmt_range(xs: list[float], scale: float = 1000, digits: int = 2) -> str:
    if len(xs) == 1:
        return f"{xs[0] * scale:.{digits}f}"
    return f"{statistics.median(xs) * scale:.{digits}f} ({min(xs) * scale:.{digits}f}-{max(xs) * scale:.{digits}f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ab", default="probes,logprob",
                    help=f"features to also run switched off, alternating with the default (any of {','.join(SWITCHES)}; '' = none)")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare TRL loop (the shares are then of rl-console's step)")
    ap.add_argument("--json", default=None, help="also write every round's numbers here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        return child(Path(args.child), [a for a in rest if a != "--"])
    ab = [x for x in args.ab.split(",") if x]
    for x in ab:
        if x not in SWITCHES:
            ap.error(f"--ab: unknown feature {x!r} (known: {', '.join(SWITCHES)})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    from bench.overhead import run_bare

    configs = [("default", [])] + [(f"{x} off", SWITCHES[x]) for x in ab]
    feats: dict[str, list[tuple[float, float]]] = {}
    thr: dict[str, list[float]] = {}
    handoffs: dict[str, list[float]] = {}
    wall_by: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in configs}
    bare_med: list[float] = []
    bare_cpu: list[float] = []
    dump: list[dict] = []
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]  # alternate: drift lands on every configuration alike
        t0 = time.time()
        load0 = os.getloadavg()[0]
        if not args.no_bare:
            times, cpu, _ = run_bare(args.steps, env)
            bare_med.append(statistics.median(times[WARMUP:]))
            bare_cpu.append(statistics.median(cpu[WARMUP:]))
        for name, sets in order:
            res = run_instrumented(args.steps, sets, env)
            wall_by[name].append(walls(res))
            if name == "default":
                for f, v in per_step_means(res).items():
                    feats.setdefault(f, []).append(v)
                for k, v in threads_per_step(res).items():
                    thr.setdefault(k, []).append(v)
                for k, v in counts_per_step(res).items():
                    handoffs.setdefault(k, []).append(v)
            dump.append({"round": r + 1, "config": name, "walls": walls(res), "features": per_step_means(res)})
        print(f"round {r + 1}/{args.rounds} done in {time.time() - t0:.0f} s (load average {load0:.2f} -> {os.getloadavg()[0]:.2f})"
              + (f"; bare median step {bare_med[-1] * 1000:.1f} ms" if bare_med else ""), flush=True)
    base = statistics.median(bare_med) if bare_med else None
    default = wall_by["default"]
    step_med = statistics.median(w[0] for w in default)
    denom = base or step_med
    what = "the bare loop's median step" if base else "rl-console's median step"
    print(f"\nPer-feature cost on the embedded default profile, {args.steps} steps, {args.rounds} rounds, steps > {WARMUP}; "
          f"share of {what} ({denom * 1000:.1f} ms)")
    print(f"{'feature':40s} {'CPU ms/step':>22s} {'wall ms/step':>22s} {'% of step':>10s}")
    total_cpu = [0.0] * args.rounds
    total_wall = [0.0] * args.rounds
    for f in ORDER + sorted(k for k in feats if k not in ORDER and not k.startswith("(")):
        vals = feats.get(f)
        if not vals:
            continue
        vals = vals + [(0.0, 0.0)] * (args.rounds - len(vals))  # a round in which it never ran
        cpu = [c for c, _ in vals]
        wall = [w for _, w in vals]
        for i in range(args.rounds):
            total_cpu[i] += cpu[i]
            total_wall[i] += wall[i]
        print(f"{f:40s} {fmt_range(cpu):>22s} {fmt_range(wall):>22s} {statistics.median(wall) / denom * 100:9.2f}%")
    print(f"{'total (training thread + report worker)':40s} {fmt_range(total_cpu):>22s} {fmt_range(total_wall):>22s} "
          f"{statistics.median(total_wall) / denom * 100:9.2f}%")
    print("\nCPU per step by thread (median step; median and range over rounds):")
    for k in sorted(thr, key=lambda k: -statistics.median(thr[k])):
        if statistics.median(thr[k]) >= 0.0001:
            print(f"  {k:40s} {fmt_range(thr[k]):>22s} ms")
    print("\nThread hand-offs per step (mean over the steps; median and range over rounds):")
    for k in sorted(handoffs):
        vals = handoffs[k] + [0.0] * (args.rounds - len(handoffs[k]))
        print(f"  {k:40s} {fmt_range(vals, scale=1):>22s}")
    print("\nWall clock per step (between step ends, probes and checkpoints included) and process CPU per step:")
    if bare_med:
        print(f"  {'bare TRL loop':28s} median {fmt_range(bare_med, digits=1):>20s} ms   process CPU {fmt_range(bare_cpu, digits=1)} ms")
    for name, _ in configs:
        w = wall_by[name]
        line = (f"  {'rl-console, ' + name:28s} median {fmt_range([x[0] for x in w], digits=1):>20s} ms   "
                f"mean {fmt_range([x[1] for x in w], digits=1):>20s} ms   process CPU {fmt_range([x[2] for x in w], digits=1)} ms")
        if name != "default":  # paired by round: off / on
            ratio = [x[1] / d[1] for x, d in zip(w, default)]
            line += f"   mean off/on {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": dump, "bare": bare_med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
