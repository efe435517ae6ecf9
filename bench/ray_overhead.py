"""What does the Ray backend cost? Rollout tokens/s through RayEngine (1 replica, 1 CPU)
against LocalVLLMEngine (in-process, 1 torch thread: the same compute), on the locally
built tiny model, with the same prompts, n, max_tokens and seeded sampling (so both
engines generate the very same tokens). Warm-up calls first, then timed repeats that alternate between the engines.

    .venv/bin/python bench/ray_overhead.py [--repeats 15] [--warmup 2] [--local-first]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.engine.base import Sampling  # noqa: E402

# (label, prompts, n, max_tokens): a small rollout where per-call overhead shows, and a larger one
WORKLOADS = [
    ("small: 4 prompts x 8 x 8 tok", 4, 8, 8),
    ("step:  16 prompts x 8 x 16 tok", 16, 8, 16),
    ("large: 64 prompts x 8 x 32 tok", 64, 8, 32),
]


def prompts(k: int) -> list[list[int]]:
    return [[4 + (i * 7 + j) % 40 for j in range(3 + i % 5)] for i in range(k)]


def _in_actor(actor_self, ids, sampling):
    """Runs inside the Ray actor (via `__ray_call__`): the engine's own time, and the result
    (so the caller's wall time minus this one is Ray's transport of the same call)."""
    t0 = time.perf_counter()
    groups = actor_self.engine.generate(ids, sampling)
    return time.perf_counter() - t0, groups


def measure(local, ray_engine, repeats: int, warmup: int) -> dict[str, dict]:
    """Per workload: calls alternate local / ray / ray-with-inside-timing, so a shared box's background
    load hits all three alike (sequential blocks of runs differed by 20 % from noise alone)."""
    import ray

    actor = ray_engine.actors[0]
    out = {}
    for label, k, n, max_tokens in WORKLOADS:
        ids = prompts(k)
        sampling = Sampling(n=n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=max_tokens, seed=11)
        for _ in range(warmup):
            local.generate(ids, sampling)
            ray_engine.generate(ids, sampling)
        row: dict[str, list] = {"local": [], "ray": [], "transport": []}
        tokens = {}
        for _ in range(repeats):
            for name, engine in (("local", local), ("ray", ray_engine)):
                t0 = time.perf_counter()
                groups = engine.generate(ids, sampling)
                row[name].append(time.perf_counter() - t0)
                tokens[name] = [[c.token_ids for c in g] for g in groups]
            t0 = time.perf_counter()
            inside, _ = ray.get(actor.__ray_call__.remote(_in_actor, ids, sampling))
            row["transport"].append(time.perf_counter() - t0 - inside)
        ntok = sum(len(t) for g in tokens["local"] for t in g)
        out[label] = {**row, "ntok": ntok, "same": tokens["local"] == tokens["ray"]}
    return out


def push_ms(engine, model_dir: Path, repeats: int) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    from backend.engine import weight_sync

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tensors = weight_sync.state_tensors(model)
    checksum, _ = weight_sync.fingerprint(tensors)
    times = []
    for v in range(1, repeats + 2):
        t0 = time.perf_counter()
        engine.push_weights(tensors, v, checksum)
        if v > 1:  # the first push is warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--local-first", action="store_true",
                    help="start the local engine before the Ray one (on the shared 2-core box the start order "
                         "moved the ratio by up to ~10%%: the engine started first ran faster)")
    args = ap.parse_args()

    import torch

    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions
    from backend.engine.ray_engine import RayEngine
    from backend.settings import RaySection
    from backend.training.tiny_model import build_model

    work = Path(tempfile.mkdtemp(prefix="rlc-bench-", dir="/tmp"))
    try:
        model_dir = build_model(work / "m")
        cache = str(work / "cache")
        torch.set_num_threads(1)  # the Ray actor gets 1 CPU: OMP_NUM_THREADS=1
        started: dict[str, tuple[object, float]] = {}
        builders = {
            "local": lambda: LocalVLLMEngine(str(model_dir), EngineOptions(cache_root=cache)),
            "ray": lambda: RayEngine(str(model_dir), EngineOptions(cache_root=cache), replicas=1,
                                     ray_settings=RaySection(num_cpus_per_engine=1)),
        }
        for name in (["local", "ray"] if args.local_first else ["ray", "local"]):
            t0 = time.perf_counter()
            started[name] = (builders[name](), time.perf_counter() - t0)
        (local, start_local), (ray_engine, start_ray) = started["local"], started["ray"]
        try:
            results = measure(local, ray_engine, args.repeats, args.warmup)
            push_local = push_ms(local, model_dir, args.repeats)
            push_ray = push_ms(ray_engine, model_dir, args.repeats)
        finally:
            local.shutdown()
            ray_engine.shutdown()

        med = statistics.median
        print(f"\nrollout throughput: median [min-max] generated tokens/s over {args.repeats} alternating repeats "
              f"after {args.warmup} warm-up; 1 CPU thread each")
        print(f"{'workload':32} {'tokens':>6} {'local in-process':>22} {'ray, 1 replica':>22} {'ray/local':>9} "
              f"{'local ms':>8} {'ray ms':>8} {'transport ms':>12} {'same tokens':>11}")
        for label, *_ in WORKLOADS:
            r = results[label]
            rate = lambda secs: [r["ntok"] / x for x in secs]  # noqa: E731
            fmt = lambda v: f"{med(v):6.0f} [{min(v):5.0f}-{max(v):5.0f}]"  # noqa: E731
            print(f"{label:32} {r['ntok']:6d} {fmt(rate(r['local'])):>22} {fmt(rate(r['ray'])):>22} "
                  f"{med(r['local']) / med(r['ray']):9.3f} {med(r['local']) * 1e3:8.1f} {med(r['ray']) * 1e3:8.1f} "
                  f"{med(r['transport']) * 1e3:12.1f} {'yes' if r['same'] else 'NO':>11}")
        print("(ms: median wall time of one generate() call; transport ms: a call's wall time minus the engine time"
              " measured inside the actor for that same call = Ray's scheduling + moving the result)")
        print(f"\nweight push (median of {args.repeats}, ms): local {med(push_local):.1f}, ray {med(push_ray):.1f}")
        print(f"engine start (s): local {start_local:.1f}, ray {start_ray:.1f} (cluster + actor); "
              f"started {'local' if args.local_first else 'ray'} first")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
