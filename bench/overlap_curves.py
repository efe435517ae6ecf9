"""Does `training.overlap` learn like synchronous mode? The same run (embedded default unless
told otherwise) with the same seed, synchronous then overlapped, for each seed, each in its own
`python -m backend run --headless --json` process, in one invocation.

    python bench/overlap_curves.py [--steps 150] [--seeds 0,1,2] [--window 25] [--json-out FILE]
                                   [--set SECTION.FIELD=VALUE ...]

Prints per seed and mode the mean reward per window of steps and over the last 10 steps, and for
the overlapped run its prefetched share, staleness, TRL's importance-ratio range and the share
of sequences the correction masked. Median step times are printed too, but on a small shared
CPU box the engine and the trainer compete for the same cores: they say nothing about the
speed-up overlap can give on a GPU (bench/vs_trl.py --overlap measures that).
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


def run(steps: int, seed: int, overlap: bool, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "backend", "run", "--headless", "--json", "--max-steps", str(steps),
           "--run-id", f"curves-{'overlap' if overlap else 'sync'}-{seed}-{time.time_ns() % 10**8}",
           "--set", f"run.seed={seed}", "--set", "run.checkpoint_every=0", "--set", "telemetry.probe_every=0",
           "--set", f"training.overlap={'true' if overlap else 'false'}"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT) + ":" + os.environ.get("PYTHONPATH", "")})
    rows = []
    for line in out.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("kind") == "step_metrics":
            rows.append({k: ev.get(k) for k in ("step", "reward_mean", "staleness", "prefetched", "overlap_fallback",
                                                "is_ratio_min", "is_ratio_mean", "is_ratio_max", "is_clipped_frac")}
                        | {"total": ev["times"]["total"]})
    if out.returncode != 0 or not rows:
        print(out.stderr[-3000:], file=sys.stderr)
    return {"rc": out.returncode, "wall_s": time.perf_counter() - t0, "rows": rows}


def summary(res: dict, window: int) -> dict:
    rows = res["rows"]
    r = [x["reward_mean"] for x in rows]
    out = {"steps": len(rows), "rc": res["rc"],
           "reward_per_window": [round(statistics.fmean(r[i:i + window]), 3) for i in range(0, len(r), window)],
           "reward_last10": round(statistics.fmean(r[-10:]), 3) if r else None,
           "median_step_s": statistics.median(x["total"] for x in rows[3:] or rows) if rows else None}
    if any(x["prefetched"] for x in rows):
        ratios = [x["is_ratio_mean"] for x in rows if x["is_ratio_mean"] is not None]
        out.update(prefetched_share=round(sum(bool(x["prefetched"]) for x in rows) / len(rows), 3),
                   staleness_max=max(x["staleness"] for x in rows),
                   is_ratio_mean_range=[round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
                   is_ratio_extremes=[round(min(x["is_ratio_min"] for x in rows if x["is_ratio_min"] is not None), 3),
                                      round(max(x["is_ratio_max"] for x in rows if x["is_ratio_max"] is not None), 3)],
                   is_clipped_frac_mean=round(statistics.fmean(x["is_clipped_frac"] for x in rows
                                                               if x["is_clipped_frac"] is not None), 4),
                   fallbacks=sorted({x["overlap_fallback"] for x in rows if x["overlap_fallback"]}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    results: dict = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode in ("sync", "overlap"):
            res = run(args.steps, seed, mode == "overlap", args.set)
            res["summary"] = summary(res, args.window)
            results[f"{mode}-{seed}"] = res
            print(f"seed {seed} {mode:8s} " + json.dumps(res["summary"]), flush=True)
    last = {m: [results[f"{m}-{s}"]["summary"]["reward_last10"] for s in args.seeds.split(",")] for m in ("sync", "overlap")}
    print(f"reward over the last 10 steps, per seed: synchronous {last['sync']}, overlapped {last['overlap']}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0 if all(r["rc"] == 0 and r["rows"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
