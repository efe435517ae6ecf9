"""rl-console against the loop users would otherwise run: TRL's own GRPOTrainer with its
built-in vLLM colocate engine, on the same GPU, model, task, rewards, G, batch, max tokens,
learning rate and seed, one after the other in one invocation (each in its own process).

    python bench/vs_trl.py [--steps 60] [--prompts 32] [--G 8] [--max-tokens 32] [--lr 3e-5]
                           [--model smollm2-135m-instruct | --model-dir DIR --task length] [--json-out FILE]
                           [--overlap]

`--task chat` (default): the real model's addition questions through its chat template, rewards
`correct_answer` + `number_only`. `--task length`: plain-text prompts from DIR/prompts.jsonl (a
random model built by `bench/gpu_throughput.py --build-only --size 0.5b|1.5b`), reward
`char_match`: a random model learns nothing, so this compares the loops' cost only.

Reports per loop: median step time (steps 4..N), rl-console's generate/score/train/sync split,
rollout tokens/s, peak GPU memory (the process's own torch allocator peak for TRL; NVML's
device-wide peak during the rl-console run), and the reward per 10 steps, total and per
reward function. The ratio rl-console/TRL of the median step time is the headline.

`--overlap` adds a third loop: rl-console with `training.overlap = true` (step s+1's rollout
generated during step s's update), same config, and reports its steps/s over rl-console's
synchronous mode, its staleness, prefetched share and TRL's importance-ratio statistics, next to
both reward curves (`--only rl_console,rl_console_overlap` skips TRL). On a GPU an overlapped run
puts the engine in a process of its own (`engine.core = "auto"`); `--overlap-in-process` adds
a fourth loop, overlapped with the engine in the trainer's process, for comparison.
`--set KEY=VALUE` (repeatable) is passed to every rl-console loop. `--compile` compiles the
update in every loop (`torch_compile = True` in TRL's GRPOConfig, `trl.torch_compile = true` for
rl-console); the first step of each loop then compiles. `--rounds N` runs the loops N times,
alternating (a, b, c, a, b, c, …), and reports each round's ratios with their median and range,
so drift of the machine between loops shows as spread instead of landing in one ratio.
GPU only: TRL's colocate engine needs CUDA for its weight sync in this setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REWARDS = {"chat": ["correct_answer", "number_only"], "length": ["char_match"]}


def model_dir(source: str) -> str:
    sys.path.insert(0, str(ROOT))
    from backend.protocol.paths import home
    from backend.training import pretrained

    if pretrained.is_packaged(source):
        path, _ = pretrained.ensure_packaged(source, home() / "models", "bfloat16", lambda m: print("  ", m, flush=True))
        return str(path)
    return source


def child_trl(args) -> None:
    """TRL's GRPOTrainer, vLLM colocate, as a user would write it; one JSON line per step."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(ROOT))
    from backend.training import chat_task, demo_task

    if args.task == "chat":
        funcs, data = [chat_task.correct_answer, chat_task.number_only], chat_task.dataset()
    else:
        from datasets import load_dataset

        funcs, data = [demo_task.char_match], load_dataset("json", data_files=f"{args.model_dir}/prompts.jsonl", split="train")
    rewards = REWARDS[args.task]
    times: list[float] = []
    rows: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            times.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                dt = time.perf_counter() - times[-1]
                row = {"step": state.global_step, "reward": logs["reward"], "step_s": dt,
                       **{f: logs.get(f"rewards/{f}/mean") for f in rewards}}
                rows.append(row)
                print("TRL " + json.dumps(row), flush=True)

    cfg = GRPOConfig(
        output_dir="/tmp/vs_trl_out", per_device_train_batch_size=args.prompts * args.G, num_generations=args.G,
        max_completion_length=args.max_tokens, learning_rate=args.lr, lr_scheduler_type="constant", beta=0.0,
        loss_type="dapo", scale_rewards="group", max_steps=args.steps, logging_steps=1, save_strategy="no",
        report_to="none", seed=args.seed, bf16=True, gradient_checkpointing=False, temperature=1.0,
        torch_compile=args.compile, use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=256,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=args.model_dir, reward_funcs=funcs, args=cfg, train_dataset=data, callbacks=[Timer()])
    print("TRL_DTYPE " + str(next(trainer.model.parameters()).dtype), flush=True)
    trainer.train()
    print("TRL_PEAK_MB " + str(torch.cuda.max_memory_allocated() / 2**20), flush=True)


def run_trl(args) -> dict:
    cmd = [sys.executable, __file__, "--child", "trl", "--model-dir", args.model_dir, "--steps", str(args.steps),
           "--prompts", str(args.prompts), "--G", str(args.G), "--max-tokens", str(args.max_tokens), "--lr", str(args.lr),
           "--seed", str(args.seed), "--task", args.task] + (["--compile"] if args.compile else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT) + ":" + os.environ.get("PYTHONPATH", "")})
    wall = time.perf_counter() - t0
    rows = [json.loads(l[4:]) for l in out.stdout.splitlines() if l.startswith("TRL ")]
    peak = next((float(l.split()[1]) for l in out.stdout.splitlines() if l.startswith("TRL_PEAK_MB ")), None)
    dtype = next((l.split()[1] for l in out.stdout.splitlines() if l.startswith("TRL_DTYPE ")), None)
    if out.returncode != 0 or not rows:
        print(out.stderr[-4000:], file=sys.stderr)
    return {"loop": "TRL GRPOTrainer + vLLM colocate", "rows": rows, "peak_mb": peak, "policy_dtype": dtype,
            "wall_s": wall, "rc": out.returncode}


def run_console(args, overlap: bool = False, core: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "backend", "run", "--headless", "--json", "--profile", str(ROOT / "profiles/smollm2-gpu.toml"),
           "--max-steps", str(args.steps), "--set", f"model.source={args.model_dir}",
           "--set", f"training.prompts_per_step={args.prompts}", "--set", f"sampling.num_generations={args.G}",
           "--set", f"sampling.max_tokens={args.max_tokens}", "--set", f"training.learning_rate={args.lr}",
           "--set", f"run.seed={args.seed}", "--set", "run.checkpoint_every=0"]
    if args.task == "length":
        cmd += ["--set", "task.name=length", "--set", f"task.dataset={args.model_dir}/prompts.jsonl",
                "--set", 'task.reward_funcs=["backend.training.demo_task:char_match"]']
    if overlap:
        cmd += ["--set", "training.overlap=true"]
    if core:
        cmd += ["--set", f"engine.core={core}"]
    for kv in [*(args.set or ()), *(["trl.torch_compile=true"] if getattr(args, "compile", False) else [])]:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT) + ":" + os.environ.get("PYTHONPATH", "")})
    wall = time.perf_counter() - t0
    rows, peak, synced, util = [], 0.0, [], []
    for line in out.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("kind") == "step_metrics":
            t = ev["times"]
            rows.append({"step": ev["step"], "ts": ev.get("ts"), "reward": ev["reward_mean"], "step_s": t["total"], "generate": t["generate"],
                         "score": t["score"], "train": t["train"], "sync": t["sync"], "tokens_per_s": ev["tokens_per_s"],
                         "logprob_diff_mean": ev.get("logprob_diff_mean"), "staleness": ev.get("staleness", 0),
                         "prefetched": ev.get("prefetched", False), "generate_hidden_s": ev.get("generate_hidden_s", 0.0),
                         "is_ratio_mean": ev.get("is_ratio_mean"), "is_ratio_min": ev.get("is_ratio_min"),
                         "is_ratio_max": ev.get("is_ratio_max"), "is_clipped_frac": ev.get("is_clipped_frac"),
                         **{f: ev["rewards_by_function"].get(f) for f in REWARDS[args.task]}})
        elif ev.get("kind") == "gpu_stats" and ev.get("gpus"):
            peak = max(peak, max(g["mem_used_mb"] for g in ev["gpus"]))
            if rows:  # after the first step: the loop running, not the engine starting (nor compiling)
                util.append((len(rows), ev["gpus"][0]["util_pct"], ev.get("ts")))
        elif ev.get("kind") == "weights_synced":
            synced.append({"verified": ev["verified"], "detail": ev["detail"][:300], "bytes": ev["bytes"], "s": ev["duration_s"]})
    # until the last step's metrics: not the run's shutdown (final checkpoint, engine teardown), whose idle
    # samples would dominate a short run's mean
    trace = [[n, u, ts] for n, u, ts in util if n < len(rows)]  # (steps done, NVML util %, event time): to set beside
    util = [u for n, u, _ in trace]                                  # another reading of the same seconds
    if out.returncode != 0 or not rows:  # why: its stderr, and the run's own account (--json: on stdout)
        told = [line for line in out.stdout.splitlines() if '"state_changed"' in line or '"alert"' in line
                or '"log"' in line]
        print(out.stderr[-4000:] + "\n" + "\n".join(told[-8:])[-4000:], file=sys.stderr)
    name = "rl-console (profiles/smollm2-gpu.toml" + (", training.overlap = true" if overlap else "") + \
        (f", engine.core = {core}" if core else "") + ")"
    return {"loop": name, "rows": rows, "peak_mb": peak or None, "wall_s": wall,
            "rc": out.returncode, "syncs": synced[:3] + synced[-2:], "gpu_util_mean": statistics.fmean(util) if util else None,
            "gpu_util_trace": trace,
            "sync_bytes": synced[-1]["bytes"] if synced else None}


STALL_FACTOR = 5


def summarize(res: dict, rewards: list[str]) -> dict:
    rows = res["rows"]
    steady = [r["step_s"] for r in rows[3:]] or [r["step_s"] for r in rows]
    per10 = [round(statistics.fmean(r["reward"] for r in rows[i:i + 10]), 2) for i in range(0, len(rows), 10)]
    out = {"median_step_s": statistics.median(steady) if steady else None, "reward_per_10": per10,
           "steps": len(rows)}
    # the median hides a step that stalls (a second compile took 102 s of a compiled run's 112):
    # the slowest step after the first, and the steps over 5x the median with their seconds
    later = [r["step_s"] for r in rows[1:]]
    if later and out["median_step_s"]:
        stalls = [s for s in later if s > STALL_FACTOR * out["median_step_s"]]
        out.update(mean_step_s=statistics.fmean(later), slowest_later_step_s=max(later),
                   stalled_steps=len(stalls), stalled_s=sum(stalls))
    for f in rewards:
        vals = [r[f] for r in rows if r.get(f) is not None]
        if vals:
            out[f"{f}_first10_last10"] = (round(statistics.fmean(vals[:10]), 2), round(statistics.fmean(vals[-10:]), 2))
    if rows and "generate" in rows[0]:
        for k in ("generate", "score", "train", "sync", "tokens_per_s"):
            out[f"median_{k}"] = statistics.median(r[k] for r in rows[3:] or rows)
        out["sync_share_median"] = statistics.median(r["sync"] / r["step_s"] for r in rows[3:] or rows if r["step_s"] > 0)
        if res.get("sync_bytes"):
            out["sync_gb_per_s"] = res["sync_bytes"] / out["median_sync"] / 1e9
    if rows and any(r.get("prefetched") for r in rows):
        out["prefetched_share"] = sum(bool(r["prefetched"]) for r in rows) / len(rows)
        out["staleness_max"] = max(r["staleness"] for r in rows)
        out["median_generate_hidden"] = statistics.median(r["generate_hidden_s"] for r in rows[3:] or rows)
        ratios = [r["is_ratio_mean"] for r in rows if r.get("is_ratio_mean") is not None]
        clipped = [r["is_clipped_frac"] for r in rows if r.get("is_clipped_frac") is not None]
        out["is_ratio_mean_range"] = (min(ratios), max(ratios)) if ratios else None
        out["is_ratio_min_max"] = (min(r["is_ratio_min"] for r in rows if r.get("is_ratio_min") is not None),
                                   max(r["is_ratio_max"] for r in rows if r.get("is_ratio_max") is not None)) if ratios else None
        out["is_clipped_frac_mean"] = statistics.fmean(clipped) if clipped else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["trl"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--model-dir")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=list(REWARDS), default="chat")
    ap.add_argument("--only", default=None, help="comma-separated loops to run: trl, rl_console, rl_console_overlap")
    ap.add_argument("--overlap", action="store_true", help="also run rl-console with training.overlap = true")
    ap.add_argument("--overlap-in-process", action="store_true",
                    help="also run rl-console overlapped with engine.core = in_process")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="passed to every rl-console loop")
    ap.add_argument("--compile", action="store_true", help="compile the update in every loop (TRL's torch_compile)")
    ap.add_argument("--rounds", type=int, default=1, help="run the loops this many times, alternating; ratios per round")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if args.child == "trl":
        child_trl(args)
        return 0
    args.model_dir = args.model_dir or model_dir(args.model)
    loops = [("trl", run_trl), ("rl_console", run_console)]
    only = set(args.only.split(",")) if args.only else None
    if args.overlap or (only and "rl_console_overlap" in only):
        loops.append(("rl_console_overlap", lambda a: run_console(a, overlap=True)))
    if args.overlap_in_process or (only and "rl_console_overlap_inproc" in only):
        loops.append(("rl_console_overlap_inproc", lambda a: run_console(a, overlap=True, core="in_process")))
    loops = [(name, fn) for name, fn in loops if not only or name in only]
    rounds: list[dict] = []
    for r in range(args.rounds):
        results: dict = {}
        for name, fn in loops:
            print(f"== {name}" + (f" (round {r + 1} of {args.rounds})" if args.rounds > 1 else ""), flush=True)
            res = fn(args)
            res["summary"] = summarize(res, REWARDS[args.task])
            results[name] = res
            print(json.dumps({k: v for k, v in res.items() if k not in ("rows", "gpu_util_trace")}, indent=1), flush=True)
            if args.json_out:  # after every loop: a time limit later keeps what finished
                done = [*rounds, results]
                Path(args.json_out).write_text(json.dumps(done[0] if args.rounds == 1 else {"rounds": done}, indent=1))
        rounds.append(results)
        report(results)
    if args.rounds > 1:
        print("over the rounds (median, range):", flush=True)
        for what, ratios in round_ratios(rounds).items():
            print(f"  {what}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}; "
                  f"{', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    return 0 if all(r["rc"] == 0 and r["rows"] for results in rounds for r in results.values()) else 1


def _median_step(results: dict, name: str) -> float | None:
    return results.get(name, {}).get("summary", {}).get("median_step_s")


def round_ratios(rounds: list[dict]) -> dict[str, list[float]]:
    """Each round's ratios of median steps: rl-console / TRL, and synchronous / overlapped (steps/s)."""
    out: dict[str, list[float]] = {}
    for results in rounds:
        a, b, c = (_median_step(results, k) for k in ("trl", "rl_console", "rl_console_overlap"))
        for what, num, den in (("rl-console step / TRL step", b, a), ("overlap steps/s / synchronous", b, c)):
            if num and den:
                out.setdefault(what, []).append(num / den)
    return out


def report(results: dict) -> None:
    a, b = (results.get(k, {}).get("summary", {}).get("median_step_s") for k in ("trl", "rl_console"))
    if a and b:
        print(f"median step: TRL colocate {a * 1000:.0f} ms, rl-console {b * 1000:.0f} ms, ratio {b / a:.2f}x", flush=True)
    c = results.get("rl_console_overlap", {}).get("summary", {}).get("median_step_s")
    if b and c:
        o = results["rl_console_overlap"]["summary"]
        print(f"overlap: median step {c * 1000:.0f} ms vs synchronous {b * 1000:.0f} ms: {b / c:.2f}x steps/s; "
              f"prefetched {o.get('prefetched_share', 0):.0%} of steps, staleness max {o.get('staleness_max')}, "
              f"IS ratio mean range {o.get('is_ratio_mean_range')}, clipped {o.get('is_clipped_frac_mean')}", flush=True)
    if a and c:
        print(f"overlap vs TRL colocate: ratio {c / a:.2f}x", flush=True)
    d = results.get("rl_console_overlap_inproc", {}).get("summary", {}).get("median_step_s")
    if b and d:
        print(f"overlap with the engine in-process: median step {d * 1000:.0f} ms: {b / d:.2f}x steps/s over "
              f"synchronous" + (f"; own process {d / c:.2f}x its steps/s" if c else ""), flush=True)
    for name in results:
        s = results[name]["summary"]
        print(f"reward per 10 steps, {name}: {s['reward_per_10']}", flush=True)
        if s.get("stalled_steps"):
            print(f"  {name}: {s['stalled_steps']} step(s) after the first over {STALL_FACTOR}x the median step, "
                  f"{s['stalled_s']:.1f} s in all (slowest {s['slowest_later_step_s']:.1f} s; mean step "
                  f"{s['mean_step_s'] * 1000:.0f} ms against the median's {s['median_step_s'] * 1000:.0f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
