"""A real headless run, paused once mid-way, summarised: step-time split, tokens/s, sync
share, pause latency, GPU utilisation, reward curve ends. Works on CPU and GPU.

  python3 bench/live_run.py [--steps 150] [--pause-at 60] [--out events.jsonl] [-- extra run args]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.protocol import decode_event  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--pause-at", type=int, default=60)
    ap.add_argument("--resync-at", type=int, default=None, help="also ask for an operator resync (verified) at this step")
    ap.add_argument("--out", default=None, help="save every event (JSON lines) here")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "console.cli"]
    proc = subprocess.Popen(cli + ["run", "--headless", "--json", "--max-steps", str(args.steps), *args.extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    out = open(args.out, "w") if args.out else None
    events, run_id, pause_sent, paused_at, resync_sent = [], None, None, None, None
    for line in proc.stdout:
        if out:
            out.write(line)
        ev = decode_event(line)
        events.append(ev)
        if ev.kind == "run_started":
            run_id = ev.run_id
        if ev.kind == "step_metrics" and ev.step >= args.pause_at and pause_sent is None and run_id:
            pause_sent = time.time()
            subprocess.Popen(cli + ["ctl", run_id, "pause"], env=env, stdout=subprocess.DEVNULL)
        if (args.resync_at is not None and ev.kind == "step_metrics" and ev.step >= args.resync_at
                and resync_sent is None and run_id):
            resync_sent = ev.step
            subprocess.Popen(cli + ["ctl", run_id, "resync"], env=env, stdout=subprocess.DEVNULL)
        if ev.kind == "state_changed" and ev.state == "paused" and paused_at is None:
            paused_at = ev.ts
            subprocess.Popen(cli + ["ctl", run_id, "resume"], env=env, stdout=subprocess.DEVNULL)
    rc = proc.wait()
    metrics = [e for e in events if e.kind == "step_metrics"]
    if rc != 0 or not metrics:
        print(f"run failed (exit {rc}); last events: {[e.kind + ':' + getattr(e, 'reason', '') for e in events[-5:]]}")
        return 1
    started = next(e for e in events if e.kind == "run_started")
    steady = metrics[5:] or metrics
    med = lambda xs: statistics.median(xs)  # noqa: E731
    t = {k: med([getattr(m.times, k) for m in steady]) for k in ("generate", "score", "train", "sync", "total")}
    gpu = [g for e in events if e.kind == "gpu_stats" and e.available for g in e.gpus]
    syncs = [e for e in events if e.kind == "weights_synced"]
    accepted = next((e for e in events if e.kind == "command_result" and e.command == "pause" and e.status == "accepted"), None)
    w = min(10, len(metrics))
    print(f"engine: {started.engine}   model: {started.model}   steps: {len(metrics)}")
    print(f"step time (median of steps 6+): total {t['total'] * 1000:.1f} ms = generate {t['generate'] * 1000:.1f} + "
          f"score {t['score'] * 1000:.1f} + train {t['train'] * 1000:.1f} + sync {t['sync'] * 1000:.1f} ms "
          f"(sync {t['sync'] / t['total']:.1%} of the step)")
    print(f"rollout tokens/s (median): {med([m.tokens_per_s for m in steady]):.0f}   samples/s: {med([m.samples_per_s for m in steady]):.0f}")
    if syncs:
        print(f"weight syncs: {len(syncs)}, median {med([s.duration_s for s in syncs]) * 1000:.1f} ms, "
              f"{syncs[-1].bytes / 1e6:.2f} MB each, verified by canary: {sum(s.verified for s in syncs)}")
    if accepted and paused_at:
        print(f"pause latency (command accepted -> engine idle at the step boundary): {(paused_at - accepted.ts) * 1000:.0f} ms")
    if resync_sent is not None:
        op = [s for s in syncs if s.detail.startswith("resync")]
        print(f"operator resync sent after step {resync_sent}: " + (
            f"{len(op)} sync(s), verified {[s.verified for s in op]}, {op[0].duration_s * 1000:.1f} ms, {op[0].detail}"
            if op else "no operator sync seen"))
    by_card: dict = {}
    for g in gpu:
        by_card.setdefault((g.node, g.index), []).append(g)
    for (node, index), gs in sorted(by_card.items()):
        print(f"GPU {index} on {node} ({gs[0].name}): util mean {statistics.fmean(g.util_pct for g in gs):.0f}%, "
              f"max mem {max(g.mem_used_mb for g in gs):.0f} MB, max power {max(g.power_w or 0 for g in gs):.0f} W, "
              f"{len(gs)} samples")
    if not gpu:
        print("GPU: none (" + next((e.reason for e in events if e.kind == "gpu_stats"), "no stats") + ")")
    print(f"reward first {w} steps {statistics.fmean(m.reward_mean for m in metrics[:w]):.3f} -> "
          f"last {w} {statistics.fmean(m.reward_mean for m in metrics[-w:]):.3f}")
    print("alerts:", sorted({e.rule for e in events if e.kind == "alert"}) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
