"""What does rl-console cost per GRPO step? Same config, three ways, side by side:

  (a) bare: TRL's GRPOTrainer + a hand-written rollout_func on vllm.LLM + reload_weights
      every step — what a user would write with TRL and vLLM and no console;
  (b) rl-console headless (`rl-console run --headless`, its default output: one line per step);
  (c) rl-console with the TUI attached (`rl-console run` in tmux, 120x40).

Same tiny model (built locally), task, rewards, batch, G, max_tokens, lr, seed, and the same
engine: (a) builds `vllm.LLM` with rl-console's engine options (no prefix caching, no chunked
prefill on CPU, processed log-probs) and samples each prompt with its own seed as rl-console
does (`request_seed`), so the ratio holds only what the console adds. Step times: (a) from a
callback, (b) and (c) from the run's event log (`StepMetrics.times.total`). Reports the median
step time over steps after the warm-up and the ratios b/a and c/b, per round and over rounds.

On a shared machine the wall times move with the other load. So for (a) and (b) the bench also
reads, at each step's line on the child's stdout, the CPU time of all the child's threads
(`/proc/PID/task/*/schedstat`) and the time they waited for a core: the CPU per step (median)
is the console's cost with the machine's load mostly taken out, the wait says how loaded it was.

  .venv/bin/python bench/overhead.py [--steps 120] [--rounds 3] [--skip-tui]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 20


def bare(steps: int, out: Path) -> None:
    """(a) The baseline, in its own process: no controller, no events, no console."""
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
    torch.set_num_threads(1)
    torch.manual_seed(0)
    e = p.model.embedded
    path, _ = ensure_model(home() / "models", TinyModelSpec(e.hidden_size, e.num_layers, e.num_heads, e.num_kv_heads, e.intermediate_size, 64, e.seed))
    # rl-console's engine options on CPU (backend/engine/local.py): the same engine, so its cost is not counted as the console's
    llm = LLM(model=str(path), dtype="float32", max_model_len=64, enforce_eager=True, seed=0, enable_prefix_caching=False,
              logprobs_mode="processed_logprobs", enable_chunked_prefill=False, max_num_batched_tokens=4096)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    supervised_warmup(model, tok, p.task.warmup_steps, p.task.warmup_learning_rate, 0, lambda *a: None, p.task.warmup_correct_fraction)
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
    trainer.train()
    out.write_text(json.dumps(times))


def logged_times(run_id: str) -> list[float]:
    """StepMetrics.times.total of a run, from its event log."""
    from backend.protocol.eventlog import EventLogReader
    from backend.protocol.paths import db_path

    with EventLogReader(db_path(run_id)) as log:
        return [m.times.total for m in log.read(kinds=("step_metrics",))]


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


def run_child(cmd: list[str], env, is_step) -> tuple[list[float], list[float], list[float]]:
    """Run `cmd`; at each stdout line `is_step` accepts, read the child's CPU and run-queue wait.
    Returns (stdout lines, CPU seconds per step, wait seconds per step)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    lines, marks = [], []
    for line in proc.stdout:
        lines.append(line)
        if is_step(line):
            try:
                marks.append(_schedstat(proc.pid))
            except OSError:  # exiting
                pass
    if proc.wait() != 0:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {''.join(lines[-20:])}")
    cpu = [(b[0] - a[0]) / 1e9 for a, b in zip(marks, marks[1:])]
    wait = [(b[1] - a[1]) / 1e9 for a, b in zip(marks, marks[1:])]
    return lines, cpu, wait


def run_bare(steps: int, env) -> tuple[list[float], list[float], list[float]]:
    res_file = Path(tempfile.mkdtemp()) / "bare.json"
    _, cpu, wait = run_child([sys.executable, __file__, "--steps", str(steps), "--bare-child", str(res_file)], env,
                             lambda line: line.startswith("@@step "))
    return json.loads(res_file.read_text()), cpu, wait


def run_headless(steps: int, env) -> tuple[list[float], list[float], list[float]]:
    """rl-console headless as `rl-console run --headless` starts it (its backend, one line per step
    on stdout); the step times from the run's log."""
    from backend.protocol.paths import new_run_id

    run_id = new_run_id("bench-overhead")
    _, cpu, wait = run_child([sys.executable, "-m", "backend", "run", "--run-id", run_id, "--headless", "--max-steps", str(steps)],
                             env, lambda line: line.startswith("step "))
    return logged_times(run_id), cpu, wait


def run_tui(steps: int, env) -> list[float]:
    from backend.protocol.paths import db_path, list_run_ids

    before = set(list_run_ids())
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k in ("RLC_HOME", "PYTHONPATH"))
    subprocess.run(["tmux", "new-session", "-d", "-s", "rlc-bench", "-x", "120", "-y", "40",
                    f"cd {ROOT} && env {exports} {sys.executable} -m console.cli run --max-steps {steps}; sleep 600"], check=True)
    try:
        run_id = None
        for _ in range(600):
            time.sleep(0.5)
            new = set(list_run_ids()) - before
            if new:
                run_id = new.pop()
                import sqlite3

                db = sqlite3.connect(f"file:{db_path(run_id)}?mode=ro", uri=True)
                state = db.execute("SELECT body FROM events WHERE kind='state_changed' ORDER BY seq DESC LIMIT 1").fetchone()
                db.close()
                if state and json.loads(state[0])["state"] in ("finished", "failed"):
                    return logged_times(run_id)
        raise RuntimeError("TUI run did not finish")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "rlc-bench"], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--skip-tui", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="alternating a/b(/c) blocks; the ratio's median and range are reported")
    ap.add_argument("--bare-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_child:
        bare(args.steps, Path(args.bare_child))
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "PYTHONUNBUFFERED": "1"}
    rounds: list[dict[str, float]] = []
    cpu_ratios: list[float] = []
    for r in range(args.rounds):  # alternating blocks: drift of a shared box lands in every mode alike
        a_wall, a_cpu, a_wait = run_bare(args.steps, env)
        b_wall, b_cpu, b_wait = run_headless(args.steps, env)
        results = {"(a) bare TRL + vLLM": a_wall, "(b) rl-console headless": b_wall}
        if not args.skip_tui and shutil.which("tmux"):
            results["(c) rl-console + TUI"] = run_tui(args.steps, env)
        med = {k: statistics.median(v[WARMUP:]) for k, v in results.items()}
        rounds.append(med)
        keys = list(med)
        cpu = [statistics.median(x[WARMUP:]) for x in (a_cpu, b_cpu)]
        wait = [statistics.median(x[WARMUP:]) for x in (a_wait, b_wait)]
        cpu_ratios.append(cpu[1] / cpu[0])
        print(f"round {r + 1}: " + ", ".join(f"{k} {m * 1000:.1f} ms" for k, m in med.items())
              + f"; b/a {med[keys[1]] / med[keys[0]]:.3f}" + (f", c/b {med[keys[2]] / med[keys[1]]:.3f}" if len(keys) > 2 else "")
              + f" | CPU per step a {cpu[0] * 1000:.1f} ms, b {cpu[1] * 1000:.1f} ms, b/a {cpu[1] / cpu[0]:.3f}"
              + f" | waiting for a core a {wait[0] * 1000:.1f} ms, b {wait[1] * 1000:.1f} ms", flush=True)
    keys = list(rounds[0])
    ba = [m[keys[1]] / m[keys[0]] for m in rounds]
    line = f"b/a = {statistics.median(ba):.3f} (range {min(ba):.3f}-{max(ba):.3f} over {len(ba)} rounds; goal <= 1.03)"
    line += f"   CPU b/a = {statistics.median(cpu_ratios):.3f} (range {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})"
    if len(keys) > 2:
        cb = [m[keys[2]] / m[keys[1]] for m in rounds]
        line += f"   c/b = {statistics.median(cb):.3f} (range {min(cb):.3f}-{max(cb):.3f}; goal <= 1.01)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
