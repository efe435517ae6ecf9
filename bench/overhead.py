"""What does rl-console cost per GRPO step? Same config, three ways, side by side:

  (a) bare: TRL's GRPOTrainer + a hand-written rollout_func on vllm.LLM + reload_weights
      every step — what a user would write with TRL and vLLM and no console;
  (b) rl-console headless (`rl-console run --headless`, its default output: one line per step);
  (c) (b) with the TUI attached to its run (`rl-console attach RUN` in tmux, 120x40).

Same tiny model (built locally), task, rewards, batch, G, max_tokens, lr, seed, and the same
engine: (a) builds `vllm.LLM` with rl-console's engine options (no prefix caching, no chunked
prefill on CPU, processed log-probs) and samples each prompt with its own seed as rl-console
does (`request_seed`), so the ratio holds only what the console adds.

(a), (b) and (c) take turns on the machine: all are started (one after the other), then each runs
for `--block-s` seconds while the others are stopped (SIGSTOP/SIGCONT on its process group; for
(c) the backend's and the TUI's), until all have finished. So their steps come from the same minutes and drift of a shared machine lands
in both alike. A step's time is the interval between two of its step lines on the child's stdout
(the same clock and definition for both; (a) prints one from a TrainerCallback, (b) is
`rl-console run --headless`, one line per step); steps cut by a turn are dropped, and so are the
first 20 (warm-up). At each step line the bench also reads the CPU time of all the child's
threads (`/proc/PID/task/*/schedstat`) and the time they waited for a core. Reported: the median
step of each mode per round, b/a, CPU b/a and c/b (with the backend's CPU c/b and the TUI
process's own CPU per step), and their median and range over rounds. Without tmux, (c) is
skipped.

  .venv/bin/python bench/overhead.py [--steps 200] [--rounds 3] [--block-s 2] [--skip-tui] [--variant NAME=SECTION.FIELD=VALUE,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def bare(steps: int, out: Path, on_thread: bool = False, tuned: bool = False) -> None:
    """(a) The baseline, in its own process: no controller, no events, no console. `on_thread`:
    TRL's loop runs on a second thread, as rl-console's backend runs it (its main thread serves
    the clients). `tuned`: with the two process settings rl-console makes at start-up that are
    not console work (host memory kept for reuse, `backend.hostmem`; TRL's log-prob tile fitted to
    the vocabulary, `trl_compat.fit_logprob_tile`), so against it the ratio holds the console's
    own code alone."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from vllm import LLM, SamplingParams

    from backend.engine.base import request_seed
    from backend.protocol.paths import home
    from backend.settings import load_profile
    from backend.training import demo_task
    from backend.training.factory import supervised_warmup
    from backend.training.tiny_model import TinyModelSpec, ensure_model

    p = load_profile(None)
    if tuned:
        from backend.hostmem import reuse_freed_memory

        reuse_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    e = p.model.embedded
    path, _ = ensure_model(home() / "models", TinyModelSpec(e.hidden_size, e.num_layers, e.num_heads, e.num_kv_heads, e.intermediate_size, 64, e.seed))
    # rl-console's engine options on CPU (backend/engine/local.py): the same engine, so its cost is not counted as the console's
    llm = LLM(model=str(path), dtype="float32", max_model_len=64, enforce_eager=True, seed=0, enable_prefix_caching=False,
              logprobs_mode="processed_logprobs", enable_chunked_prefill=False, max_num_batched_tokens=4096,
              # on a GPU, rl-console's share of its memory: the modes take turns alive, side by side
              **({"gpu_memory_utilization": p.engine.gpu_memory_utilization} if torch.cuda.is_available() else {}))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    supervised_warmup(model, tok, p.task.warmup_steps, p.task.warmup_learning_rate, 0, lambda *a: None, p.task.warmup_correct_fraction)
    if tuned:
        from backend.training import trl_compat

        trl_compat.fit_logprob_tile(model.get_output_embeddings().weight.shape[0])
    G, P, s = p.sampling.num_generations, p.training.prompts_per_step, p.sampling

    def push():
        tensors = [(k, v.detach()) for k, v in model.state_dict().items()]
        llm.collective_rpc(lambda w, t: w.model_runner.reload_weights(weights_iterator=iter(t)), args=(tensors,))

    def rollout(prompts, trainer):
        push()  # on-policy: the engine serves the weights of the last update
        distinct = prompts[::G]
        ids = [tok(x, add_special_tokens=False)["input_ids"] for x in distinct]
        # each prompt its own seed, as rl-console samples (one seed for the batch gives completion j
        # of every prompt the same random stream)
        base = p.run.seed * 1_000_003 + trainer.state.global_step
        params = [SamplingParams(n=G, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                                 seed=request_seed(base, k)) for k in range(len(ids))]
        outs = llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        rows = [(i, c) for i, o in zip(ids, outs) for c in o.outputs]
        return {"prompt_ids": [i for i, _ in rows], "completion_ids": [list(c.token_ids) for _, c in rows],
                "logprobs": [[0.0] * len(c.token_ids) for _, c in rows], "truncated": [c.finish_reason == "length" for _, c in rows]}

    times: list[float] = []

    class Clock(TrainerCallback):
        t = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            times.append(now - Clock.t)
            Clock.t = now
            print(f"@@step {len(times)}", flush=True)  # the parent reads the process's CPU time here

    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=P * G, num_generations=G,
                      max_completion_length=s.max_tokens, temperature=s.temperature, learning_rate=p.training.learning_rate,
                      lr_scheduler_type="constant", beta=0.0, max_steps=steps, logging_steps=1, save_strategy="no",
                      report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False, loss_type="dapo",
                      scale_rewards="group", reward_weights=list(demo_task.REWARD_WEIGHTS), disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=list(demo_task.REWARD_FUNCS), args=args,
                          train_dataset=demo_task.dataset(4096, 0), processing_class=tok, rollout_func=rollout, callbacks=[Clock()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # as rl-console does: no dict printed per step
    push()
    Clock.t = time.perf_counter()
    if on_thread:
        t = threading.Thread(target=trainer.train, name="bare-train")
        t.start()
        t.join()
    else:
        trainer.train()
    out.write_text(json.dumps(times))


def _schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting for one) summed over the process's threads."""
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b, _ = f.read().split()
        except (OSError, ValueError):  # a thread that just ended
            continue
        run, wait = run + int(a), wait + int(b)
    return run, wait


def _start(cmd: list[str], env) -> subprocess.Popen:
    # its own process group: SIGSTOP/SIGCONT reach every process it starts
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)


class Child:
    """One mode's process: its stdout read on a thread; at each step line, the parent's clock and the
    process's CPU time and run-queue wait are recorded."""

    def __init__(self, name: str, cmd: list[str], env, is_step, phases: bool = False) -> None:
        self.name, self.is_step = name, is_step
        self.phases_file = None
        if phases:  # the same program under bench/phases.py: its shared work timed per call
            self.phases_file = Path(tempfile.mkdtemp()) / "phases.json"
            env = {**env, "RLC_BENCH_PHASES": str(self.phases_file)}
            cmd = [cmd[0], str(ROOT / "bench" / "phases.py"), *cmd[1:]]
        self.proc = _start(cmd, env)
        self.lines: list[str] = []
        self.marks: list[tuple[float, int, int]] = []  # (monotonic time of the line, CPU ns, wait ns)
        self.windows: list[tuple[float, float]] = []  # when it was allowed to run
        self.first_step = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.is_step(line):
                try:
                    self.mark(time.monotonic())
                except OSError:  # exiting
                    pass
                self.first_step.set()
        self.first_step.set()

    def mark(self, now: float) -> None:
        """At a step line: the time, and the process's CPU and run-queue wait so far."""
        self.marks.append((now, *_schedstat(self.proc.pid)))

    def wait_first_step(self) -> None:
        while not self.first_step.wait(0.2):  # in slices: a blocking wait would hold off Ctrl-C
            pass

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def finish(self) -> None:
        self.reader.join()
        if self.proc.wait() != 0:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {''.join(self.lines[-20:])}")

    def steps(self) -> tuple[list[float], list[float], list[float]]:
        """Wall, CPU and wait per step, for the steps that ran wholly inside one of its windows
        (a step the other mode's turn cut in two is dropped); the first WARMUP steps are dropped."""
        wall, cpu, wait = [], [], []
        for i in range(max(1, WARMUP), len(self.marks)):
            (t0, c0, w0), (t1, c1, w1) = self.marks[i - 1], self.marks[i]
            if any(a <= t0 and t1 <= b for a, b in self.windows):
                wall.append(t1 - t0)
                cpu.append((c1 - c0) / 1e9)
                wait.append((w1 - w0) / 1e9)
        return wall, cpu, wait

    def phase_medians(self) -> dict[str, tuple[float, float]]:
        """Per shared phase: median wall and CPU seconds of its calls inside this child's turns
        (after the warm-up; `generate`: the rollout calls only, i.e. those with the commonest
        prompt count, not the probes or the canary)."""
        if self.phases_file is None:
            return {}
        out = {}
        start = self.marks[min(WARMUP, len(self.marks) - 1)][0] if self.marks else 0.0
        for key, calls in json.loads(self.phases_file.read_text()).items():
            calls = [c for c in calls if c[0] >= start and any(a <= c[0] and c[1] <= b for a, b in self.windows)]
            if key == "gc":  # its time per step: all collections in the turns over the steps counted there
                steps = len(self.steps()[0])
                out["gc per step"] = (sum(c[1] - c[0] for c in calls) / max(steps, 1), sum(c[2] for c in calls) / max(steps, 1))
                continue
            if key == "generate" and calls:
                common = statistics.mode(c[3] for c in calls)
                calls = [c for c in calls if c[3] == common]
            if calls:
                out[key] = (statistics.median(c[1] - c[0] for c in calls), statistics.median(c[2] for c in calls))
        return out


def interleaved(children: list[Child], block_s: float) -> None:
    """Let the modes take turns on the machine, `block_s` each, so that every mode's steps come
    from the same minutes: each is started alone and stopped at its first step, then they
    alternate (SIGCONT one, wait, SIGSTOP it) until all have finished; the last one left runs on."""
    for c in children:
        c.wait_first_step()
        c.signal(signal.SIGSTOP)
    while True:
        live = [c for c in children if c.proc.poll() is None]
        if not live:
            return
        for c in live:
            start = time.monotonic()
            c.signal(signal.SIGCONT)
            end = None if len(live) == 1 else start + block_s
            while c.proc.poll() is None and (end is None or time.monotonic() < end):
                time.sleep(0.01)  # short sleeps, not one blocking wait: Ctrl-C reaches the bench at once
            if c.proc.poll() is None:
                c.signal(signal.SIGSTOP)
            c.windows.append((start, time.monotonic()))


def run_bare(steps: int, env, cmd: list[str] | None = None) -> tuple[list[float], list[float], list[float]]:
    """(a) alone, start to finish (bench/feature_cost.py compares against it without turns):
    wall, CPU and wait per step after the warm-up. `cmd`: another program printing '@@step' lines."""
    with tempfile.TemporaryDirectory() as tmp:
        child = Child("bare", cmd or bare_cmd(steps, Path(tmp) / "bare.json"), env, is_step=lambda line: line.startswith("@@step "))
        start = time.monotonic()
        child.finish()
        child.windows.append((start, time.monotonic()))
        return child.steps()


def bare_cmd(steps: int, res_file: Path, on_thread: bool = False, tuned: bool = False) -> list[str]:
    return [sys.executable, __file__, "--steps", str(steps), "--bare-child", str(res_file), *(["--bare-thread"] if on_thread else []),
            *(["--bare-tuned"] if tuned else [])]


def headless_cmd(steps: int, run_id: str, sets: list[str] = ()) -> list[str]:
    """rl-console headless as `rl-console run --headless` starts it: its backend, one line per step on stdout."""
    return [sys.executable, "-m", "backend", "run", "--run-id", run_id, "--headless", "--max-steps", str(steps),
            *(x for kv in sets for x in ("--set", kv))]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME=SECTION.FIELD=VALUE,SECTION.FIELD=VALUE' -> (NAME, ['SECTION.FIELD=VALUE', ...])"""
    name, _, sets = text.partition("=")
    if not name or not sets:
        raise argparse.ArgumentTypeError(f"--variant wants NAME=SECTION.FIELD=VALUE[,...], got {text!r}")
    return name, sets.split(",")


class TuiChild(Child):
    """(c): rl-console headless as (b), with the TUI attached to it (`rl-console attach RUN` in a
    tmux pane, 120x40) from its first step on. Its turns stop and continue the backend and the
    TUI together, so (c) takes turns with (a) and (b) and c/b comes from the same minutes."""

    def __init__(self, name: str, cmd: list[str], env, is_step, run_id: str, phases: bool = False) -> None:
        self.run_id, self.env, self.tui_pid = run_id, env, None  # (before the reader thread starts)
        self.tui_marks: list[int] = []  # the TUI's CPU ns at each of the backend's step lines
        super().__init__(name, cmd, env, is_step, phases)

    def mark(self, now: float) -> None:
        tui = _schedstat(self.tui_pid)[0] if self.tui_pid else 0  # (read first: an OSError drops both)
        super().mark(now)
        self.tui_marks.append(tui)

    def wait_first_step(self) -> None:
        super().wait_first_step()
        if self.tui_pid is None and self.proc.poll() is None:
            exports = " ".join(f"{k}={v}" for k, v in self.env.items() if k in ("RLC_HOME", "PYTHONPATH"))
            done = subprocess.run(["tmux", "new-session", "-d", "-P", "-F", "#{pane_pid}", "-s", f"rlc-bench-{os.getpid()}",
                                   "-x", "120", "-y", "40",
                                   f"cd {ROOT} && exec env {exports} {sys.executable} -m console.cli attach {self.run_id}"],
                                  check=True, capture_output=True, text=True)
            self.tui_pid = int(done.stdout.strip())  # the pane's process (exec: the console itself), its own session
            time.sleep(3.0)  # the console connects and reads the history while the backend runs on

    def signal(self, sig: int) -> None:
        super().signal(sig)
        if self.tui_pid:
            try:
                os.killpg(self.tui_pid, sig)
            except ProcessLookupError:
                pass

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            subprocess.run(["tmux", "kill-session", "-t", f"rlc-bench-{os.getpid()}"], capture_output=True)

    def tui_cpu(self) -> float:
        """The TUI's median CPU seconds per step (the steps counted in `steps`)."""
        per = [(self.tui_marks[i] - self.tui_marks[i - 1]) / 1e9 for i in range(max(1, WARMUP), len(self.marks))
               if any(a <= self.marks[i - 1][0] and self.marks[i][0] <= b for a, b in self.windows)]
        return statistics.median(per) if per else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--skip-tui", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of interleaved a/b (then c); the ratio's median and range are reported")
    ap.add_argument("--block-s", type=float, default=2.0, help="seconds each mode runs before the other takes its turn")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME=SECTION.FIELD=VALUE[,...]",
                    help="also run rl-console headless with these profile overrides (env:VAR=VALUE: an environment variable), in "
                         "the same turns (e.g. lean=telemetry.probe_every=0,telemetry.logprob_diff_every=0); reported as NAME/a. "
                         "NAME=bare:thread runs (a) with TRL's loop on a second thread, as rl-console runs it; NAME=bare:tuned runs "
                         "(a) with rl-console's process settings (host memory reuse, TRL's log-prob tile fitted to the vocabulary); "
                         "NAME=bare:thread,bare:tuned both")
    ap.add_argument("--phases", action="store_true",
                    help="time the work every loop shares (generate, loss forward, backward, optimizer) in each mode (bench/phases.py)")
    ap.add_argument("--bare-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bare-thread", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bare-tuned", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child:
        bare(args.steps, Path(args.bare_child), args.bare_thread, args.bare_tuned)
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "PYTHONUNBUFFERED": "1"}
    from backend.protocol.paths import new_run_id

    ba: list[float] = []
    cpu_ratios: list[float] = []
    cb: list[float] = []
    ratios: dict[str, list[float]] = {}
    with_tui = not args.skip_tui and shutil.which("tmux") is not None
    if not args.skip_tui and not with_tui:
        print("tmux not found: (c), the TUI attached, is skipped", flush=True)
    for r in range(args.rounds):
        run_id = new_run_id("bench-overhead")
        started: list[Child] = []
        try:
            a = Child("(a) bare TRL + vLLM", bare_cmd(args.steps, Path(tempfile.mkdtemp()) / "bare.json"), env,
                      lambda line: line.startswith("@@step "), args.phases)
            started.append(a)
            for name, sets in [("(b) rl-console headless", []), *args.variant]:
                started[-1].wait_first_step()  # started one after the other: their start-ups do not share the machine
                started[-1].signal(signal.SIGSTOP)
                env_v = {**env, **dict(kv[4:].split("=", 1) for kv in sets if kv.startswith("env:"))}
                if sets and all(kv in ("bare:thread", "bare:tuned") for kv in sets):  # (a) with TRL's loop on a second thread / rl-console's process settings
                    cmd = bare_cmd(args.steps, Path(tempfile.mkdtemp()) / "bare.json", on_thread="bare:thread" in sets,
                                   tuned="bare:tuned" in sets)
                    is_step = "@@step "
                else:
                    cmd = headless_cmd(args.steps, run_id if not started[1:] else new_run_id("bench-overhead"),
                                       [kv for kv in sets if not kv.startswith("env:")])
                    is_step = "step "
                started.append(Child(name, cmd, env_v, lambda line, p=is_step: line.startswith(p), args.phases))
            if with_tui:  # (c): (b) with the TUI attached, in the same turns
                started[-1].wait_first_step()
                started[-1].signal(signal.SIGSTOP)
                tui_run = new_run_id("bench-overhead")
                started.append(TuiChild("(c) rl-console + TUI", headless_cmd(args.steps, tui_run), env,
                                        lambda line: line.startswith("step "), tui_run, args.phases))
            interleaved(started, args.block_s)
            for c in started:
                c.finish()
        finally:  # on a failure or Ctrl-C, no mode is left stopped or running behind the bench
            for c in started:
                if c.proc.poll() is None:
                    c.signal(signal.SIGKILL)
        tui = started.pop() if with_tui else None
        a, b, extra = started[0], started[1], started[2:]
        (a_wall, a_cpu, a_wait), (b_wall, b_cpu, b_wait) = a.steps(), b.steps()
        med = [statistics.median(x) for x in (a_wall, b_wall, a_cpu, b_cpu, a_wait, b_wait)]
        ba.append(med[1] / med[0])
        cpu_ratios.append(med[3] / med[2])
        line = (f"round {r + 1}: (a) bare TRL + vLLM {med[0] * 1000:.1f} ms, (b) rl-console headless {med[1] * 1000:.1f} ms"
                f" (medians of {len(a_wall)} / {len(b_wall)} steps in {len(a.windows)} / {len(b.windows)} turns); b/a {ba[-1]:.3f}"
                f" | CPU per step a {med[2] * 1000:.1f} ms, b {med[3] * 1000:.1f} ms, b/a {cpu_ratios[-1]:.3f}"
                f" | waiting for a core a {med[4] * 1000:.1f} ms, b {med[5] * 1000:.1f} ms")
        for c in extra:
            wall, cpu, _ = c.steps()
            ratios.setdefault(c.name, []).append(statistics.median(wall) / med[0])
            line += f" | {c.name} {statistics.median(wall) * 1000:.1f} ms, {c.name}/a {ratios[c.name][-1]:.3f}, CPU {statistics.median(cpu) / med[2]:.3f}"
        if tui is not None:  # the TUI's cost against (b), from the same turns
            c_wall, c_cpu, _ = tui.steps()
            cb.append(statistics.median(c_wall) / med[1])
            line += (f" | (c) rl-console + TUI {statistics.median(c_wall) * 1000:.1f} ms ({len(c_wall)} steps in {len(tui.windows)} turns),"
                     f" c/b {cb[-1]:.3f}, backend CPU c/b {statistics.median(c_cpu) / med[3]:.3f}, the TUI's own CPU {tui.tui_cpu() * 1000:.1f} ms per step")
        print(line, flush=True)
        if args.phases:
            pm = {c.name: c.phase_medians() for c in (a, b, *extra)}
            for key in pm[a.name]:
                print(f"    {key:13s} " + "   ".join(f"{n.split(' ')[0]} {v[key][0] * 1000:6.2f} ms wall {v[key][1] * 1000:6.2f} ms CPU"
                                                 for n, v in pm.items() if key in v), flush=True)
    line = f"b/a = {statistics.median(ba):.3f} (range {min(ba):.3f}-{max(ba):.3f} over {len(ba)} rounds; goal <= 1.03)"
    line += f"   CPU b/a = {statistics.median(cpu_ratios):.3f} (range {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})"
    for name, v in ratios.items():
        line += f"   {name}/a = {statistics.median(v):.3f} (range {min(v):.3f}-{max(v):.3f})"
    if cb:
        line += f"   c/b = {statistics.median(cb):.3f} (range {min(cb):.3f}-{max(cb):.3f}; goal <= 1.01)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
