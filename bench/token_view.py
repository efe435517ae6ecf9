"""Cost of the console's token view (`telemetry.token_view_groups`): the same headless run of
the embedded default with the token view off and on, alternated, in one invocation.

    python bench/token_view.py [--steps 60] [--rounds 2] [--groups 1]

Prints each run's median step time (StepMetrics.times.total, steps after the first 5) and the
ratio on/off with its range over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(steps: int, groups: int) -> float:
    cmd = [sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", str(steps),
           "--set", f"telemetry.token_view_groups={groups}", "--set", "telemetry.probe_every=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    totals = [e["times"]["total"] for line in out.stdout.splitlines() if line.startswith("{")
              for e in [json.loads(line)] if e.get("kind") == "step_metrics" and e["step"] > 5]
    return statistics.median(totals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--groups", type=int, default=1, help="token_view_groups when on")
    args = ap.parse_args()
    ratios = []
    for r in range(args.rounds):
        off = run(args.steps, 0)
        on = run(args.steps, args.groups)
        ratios.append(on / off)
        print(f"round {r + 1}: median step off {off * 1000:.1f} ms, on ({args.groups} group/step) {on * 1000:.1f} ms, "
              f"on/off {on / off:.3f}", flush=True)
    print(f"token view on/off: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, "
          f"{args.rounds} rounds of {args.steps} steps)")


if __name__ == "__main__":
    main()
