"""Weight sync time vs model size, its share of a step, and pause latency, on CPU.

1. For random Qwen2 configs built locally (the embedded tiny one up to ~100M parameters, char
   tokenizer, float32), each in its own process: start `LocalVLLMEngine`, load the same model
   with transformers (`load_policy`), scale it by 1.01 (every push really changes the engine),
   time `engine.push_weights(weight_sync.state_tensors(model), version, checksum)` (median of
   --reps after a warm-up push), the bare `engine.llm.collective_rpc(weight_sync.worker_load)`
   with the same tensors, and `state_tensors` + `fingerprint` apart. GB/s = pushed bytes (tied
   embeddings go under both names) / push time. Then the log-prob canary as
   `TrainingSession.verify_canary` runs it, timed, with its max |diff|.
2. The embedded default run, headless (`python -m backend run --headless --json`, temp
   RLC_HOME): median `times.sync / times.total` of the `step_metrics` events after --skip
   warm-up steps, over the first --steps steps (goal <= 2%).
3. Then, on the same run, --pauses times at a random moment (uniform over 1.5 median steps):
   `Pause` on the control socket (subscribed from_seq=-1) until the `state_changed` "paused"
   event arrives, then `Resume`. A pause applies at the next step boundary, so expect the rest
   of the current step (<= one step) plus delivery.

    .venv/bin/python bench/sync.py [--sizes tiny,5m,25m,50m,100m] [--reps 7] [--steps 40]
        [--skip 5] [--pauses 10] [--no-run] [--json out.json]

On a GPU (`--gpu DIR[,DIR...]`, model directories; vLLM bf16, trainer float32 on the same GPU, as
`profiles/smollm2-gpu.toml`), what a step's sync is made of, each part timed alone with the device
synchronised around it (median of --reps, after a warm-up): `state_dict()`, the cast to bf16 per
tensor (before) and packed (`state_tensors`), `fingerprint`, vLLM's per-parameter `load_weights`,
the copy plan's replay, and the whole sync as the session runs it (cast + fingerprint + push), the
old way and the new. Every push carries new values; after each copy-plan push the engine's
parameters are compared bit for bit with a `load_weights` push of the same tensors, and the
engine's log-probs with the trainer's (max |Δ|).

    python bench/sync.py --gpu /path/model[,/path/other] [--reps 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name: (hidden, layers, heads, kv_heads, intermediate); head size 64 (vLLM-CPU supports 32/64/80/96/...)
SIZES = {"tiny": (128, 2, 2, 1, 256), "5m": (256, 8, 4, 1, 512), "25m": (512, 12, 8, 2, 1024),
         "50m": (768, 12, 12, 3, 1536), "100m": (1024, 12, 16, 4, 2048)}
med = statistics.median


def child(name: str, reps: int, work: Path) -> dict:
    """One size, in its own process (one in-process vLLM engine per process)."""
    import torch

    from backend.engine import weight_sync
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions
    from backend.training import demo_task
    from backend.training.factory import load_policy
    from backend.training.tiny_model import TinyModelSpec, build_model

    torch.set_num_threads(1)  # as the default profile (run.num_threads = 1)
    h, layers, heads, kv, inter = SIZES[name]
    path = build_model(work / name, TinyModelSpec(h, layers, heads, kv, inter, 64))
    t0 = time.perf_counter()
    engine = LocalVLLMEngine(str(path), EngineOptions(cache_root=str(work / "cache")))
    start_s = time.perf_counter() - t0
    try:
        model, tok = load_policy(str(path), "float32", "cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        push, fp, bare = [], [], []
        for v in range(1, reps + 2):  # the first round is warm-up; push and the bare load alternate who goes first
            t = time.perf_counter()
            tensors = weight_sync.state_tensors(model)
            checksum, nbytes = weight_sync.fingerprint(tensors)
            took = {"fp": time.perf_counter() - t}
            for what in (("push", "bare") if v % 2 else ("bare", "push")):
                t = time.perf_counter()
                if what == "push":
                    report = engine.push_weights(tensors, v, checksum)
                else:  # the load underneath, called directly: same tensors, none of our layer
                    engine.llm.collective_rpc(weight_sync.worker_load, args=(tensors, engine.sync_method))
                took[what] = time.perf_counter() - t
            if v > 1:
                fp.append(took["fp"]), push.append(took["push"]), bare.append(took["bare"])
        seqs = [(tok(p, add_special_tokens=False)["input_ids"] * 8)[:16] for p in demo_task.prompts(4, seed=0)]
        engine.prompt_logprobs([[1, 2, 3]])  # warm-up, as TrainingSession.setup does
        model.eval()
        canary = []
        for _ in range(3):  # the canary, as TrainingSession.verify_canary does it
            t = time.perf_counter()
            got = engine.prompt_logprobs(seqs)
            worst = 0.0
            with torch.no_grad():
                for seq, g in zip(seqs, got):
                    inp = torch.tensor([seq])
                    lp = torch.log_softmax(model(input_ids=inp).logits[0, :-1].float(), -1).gather(1, inp[0, 1:, None])[:, 0]
                    worst = max(worst, max(abs(a - b) for a, b in zip(lp.tolist(), g)))
            canary.append(time.perf_counter() - t)
    finally:
        engine.shutdown()
    return {"size": name, "hidden": h, "layers": layers, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "bytes": nbytes, "push_s": push, "bare_load_s": bare, "fingerprint_s": fp, "method": report.method,
            "engine_start_s": start_s, "canary_s": med(canary), "canary_max_diff": worst}


def engine_digest(worker) -> list[tuple[str, float, float]]:
    """In the vLLM worker: per parameter, sum and a position-weighted sum (float64): equal
    digests after two loads of the same tensors mean the same values in the same places."""
    import torch

    from backend.engine import vllm_compat

    out = []
    for name, p in vllm_compat.engine_model(worker).named_parameters():
        flat = p.detach().reshape(-1).double()
        w = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64).remainder_(9973).add_(1)
        out.append((name, flat.sum().item(), (flat * w).sum().item()))
    return out


def gpu_child(model_dir: str, reps: int) -> dict:
    """One model on the GPU: the parts of a sync, timed alone, and the whole, old and new."""
    import torch

    from backend.engine import weight_sync
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions
    from backend.training.factory import load_policy

    sync = torch.cuda.synchronize
    engine = LocalVLLMEngine(model_dir, EngineOptions(device="cuda", dtype="bfloat16", max_model_len=256, enforce_eager=True,
                                                      gpu_memory_utilization=0.3,
                                                      cache_root=os.environ.get("RLC_HOME", "/tmp") + "/cache"))
    try:
        model, tok = load_policy(model_dir, "float32", "cuda")
        params = list(model.parameters())
        seqs = [[(i * 7 + j * 13) % 1000 + 10 for j in range(24)] for i in range(4)]
        t: dict[str, list[float]] = {k: [] for k in ("state_dict", "cast_per_tensor", "state_tensors", "fingerprint_before",
                                                      "fingerprint", "load_weights", "copy_plan", "sync_before", "sync_now",
                                                      "mirror_refresh", "mirror_fingerprint", "sync_mirror")}
        same, worst, method = [], 0.0, ""
        mirror = weight_sync.Mirror(model, "bfloat16")

        def timed(key, fn):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            t[key].append(time.perf_counter() - t0)
            return out

        for v in range(1, reps + 2):
            with torch.no_grad():  # every push carries new values
                for p in params:
                    p.mul_(1.0 + (1e-3 if v % 2 else -1e-3))
            timed("state_dict", model.state_dict)
            timed("cast_per_tensor", lambda: [(n, x.detach().to(torch.bfloat16)) for n, x in model.state_dict().items()])
            tensors = timed("state_tensors", lambda: weight_sync.state_tensors(model, "bfloat16"))
            checksum, nbytes = timed("fingerprint", lambda: weight_sync.fingerprint(tensors))
            timed("fingerprint_before", lambda: weight_sync.fingerprint_v2(tensors))
            if weight_sync.fingerprint([(n, x.cpu()) for n, x in tensors]) != (checksum, nbytes):
                raise AssertionError("the fingerprint differs between the GPU and the CPU")
            engine.sync_method = "load_weights"
            timed("load_weights", lambda: engine.push_weights(tensors, 2 * v, checksum))
            ref = engine.llm.collective_rpc(engine_digest)[0]
            engine.sync_method = "copy_plan"
            report = timed("copy_plan", lambda: engine.push_weights(tensors, 2 * v + 1, checksum))
            method = report.method
            same.append(engine.llm.collective_rpc(engine_digest)[0] == ref)

            def before():  # what a step's sync cost before: per-tensor cast, fingerprint, load_weights
                engine.sync_method = "load_weights"
                ts = [(n, x.detach().to(torch.bfloat16)) for n, x in model.state_dict().items()]
                engine.push_weights(ts, 10_000 + v, weight_sync.fingerprint_v2(ts)[0])

            def now():  # a fresh cast each push (what a CUDA policy pushing to a Ray engine does)
                engine.sync_method = "copy_plan"
                ts = weight_sync.state_tensors(model, "bfloat16")
                engine.push_weights(ts, 20_000 + v, weight_sync.fingerprint(ts)[0])

            def with_mirror():  # what the session does for the in-process engine: the persistent mirror
                engine.sync_method = "copy_plan"
                named = mirror.refresh()
                engine.push_weights(named, 30_000 + v, mirror.fingerprint()[0])

            order = [("sync_before", before), ("sync_now", now), ("sync_mirror", with_mirror)]
            for key, fn in order[v % 3:] + order[:v % 3]:
                timed(key, fn)
            timed("mirror_refresh", mirror.refresh)
            if timed("mirror_fingerprint", mirror.fingerprint) != weight_sync.fingerprint(weight_sync.state_tensors(model, "bfloat16")):
                raise AssertionError("the mirror's checksum differs from a fresh cast's")
        engine.sync_method = "copy_plan"
        engine.push_weights(mirror.refresh(), 40_000, mirror.fingerprint()[0])
        got = engine.prompt_logprobs(seqs)  # the engine holds a mirror push of the final weights
        model.eval()
        with torch.no_grad():
            for seq, g in zip(seqs, got):
                inp = torch.tensor([seq], device="cuda")
                lp = torch.log_softmax(model(input_ids=inp).logits[0, :-1].float(), -1).gather(1, inp[0, 1:, None])[:, 0]
                worst = max(worst, max(abs(a - b) for a, b in zip(lp.tolist(), g)))
        plan = engine.llm.collective_rpc(weight_sync.plan_of)[0]
    finally:
        engine.shutdown()
    return {"model": model_dir, "params_m": sum(p.numel() for p in params) / 1e6, "bytes": nbytes, "tensors": len(tensors),
            "times": {k: v[1:] for k, v in t.items()}, "bit_equal_to_load_weights": same, "canary_max_diff": worst,
            "method": method, "plan_copies": plan.copies if plan else None, "gpu": torch.cuda.get_device_name(0)}


def gpu_table(args) -> list[dict]:
    rows = []
    keys = ("state_dict", "cast_per_tensor", "state_tensors", "fingerprint_before", "fingerprint", "load_weights", "copy_plan",
            "sync_before", "sync_now", "mirror_refresh", "mirror_fingerprint", "sync_mirror")
    print(f"{'model':>28} {'params M':>8} {'MB':>6} " + " ".join(f"{k:>15}" for k in keys) + f" {'GB/s before':>11} {'GB/s now':>8}")
    for model_dir in args.gpu.split(","):
        if not Path(model_dir).is_dir():  # a packaged model's name (model.source), e.g. smollm2-135m-instruct
            from backend.protocol.paths import home
            from backend.training import pretrained

            model_dir = str(pretrained.ensure_packaged(model_dir, home() / "models", "bfloat16", lambda m: print("  ", m))[0])
        proc = subprocess.run([sys.executable, __file__, "--gpu-child", model_dir, "--reps", str(args.reps)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT) + ":" + os.environ.get("PYTHONPATH", "")})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{model_dir} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[7:])
        rows.append(r)
        m = {k: med(v) for k, v in r["times"].items()}
        print(f"{Path(model_dir).name[-28:]:>28} {r['params_m']:8.1f} {r['bytes'] / 1e6:6.0f} "
              + " ".join(f"{m[k] * 1e3:12.2f} ms" for k in keys)
              + f" {r['bytes'] / m['sync_before'] / 1e9:11.1f} {r['bytes'] / m['sync_now'] / 1e9:8.1f}"
              + f" mirror {r['bytes'] / m['sync_mirror'] / 1e9:.1f} GB/s", flush=True)
        print(f"{'':>28} copy plan: {r['plan_copies']} copies for {r['tensors']} tensors; engine bit-equal to load_weights "
              f"after every copy-plan push: {all(r['bit_equal_to_load_weights'])} ({len(r['bit_equal_to_load_weights'])}); "
              f"canary max |Δ log-prob| {r['canary_max_diff']:.3f}; {r['gpu']}", flush=True)
    return rows


def sizes_table(args, work: Path) -> list[dict]:
    rows = []
    for name in args.sizes.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--reps", str(args.reps), "--work", str(work)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"size {name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        r = json.loads(line[7:])
        rows.append(r)
        p = med(r["push_s"])
        print(f"{name:>5} {r['params_m']:9.2f} {r['bytes'] / 1e6:8.1f} {p * 1e3:9.1f} {min(r['push_s']) * 1e3:6.1f}-"
              f"{max(r['push_s']) * 1e3:<7.1f} {r['bytes'] / p / 1e9:6.2f} {med(r['bare_load_s']) * 1e3:8.1f} "
              f"{med(r['fingerprint_s']) * 1e3:8.1f} {r['canary_s'] * 1e3:9.1f} {r['canary_max_diff']:9.1e} {r['engine_start_s']:7.1f}", flush=True)
    return rows


async def pause_cycles(args, proc, sock: Path, home: Path) -> list[dict]:
    """Wait for --steps steps (socket subscribed from the live end), then pause/resume --pauses times; stop."""
    from backend.protocol.commands import Pause, Resume, Stop
    from console.client import BackendClient

    t0 = time.time()
    while not sock.exists():
        if proc.poll() is not None or time.time() - t0 > 300:
            raise RuntimeError(f"the run did not open its socket:\n{(home / 'stderr.log').read_text()[-3000:]}")
        await asyncio.sleep(0.1)
    client = BackendClient(sock, from_seq=-1)
    await client.connect()
    inbox: asyncio.Queue = asyncio.Queue()

    async def reader():  # stamps each event on arrival
        async for ev in client.events():
            inbox.put_nowait((time.time(), ev))
        inbox.put_nowait((time.time(), None))

    task = asyncio.create_task(reader())

    async def until(pred, timeout=120.0):
        while True:
            t, ev = await asyncio.wait_for(inbox.get(), timeout)
            if ev is None:
                raise RuntimeError("the run closed the socket")
            if pred(ev):
                return t, ev

    steps: list = []
    while len(steps) < args.steps:
        _, ev = await until(lambda e: e.kind in ("step_metrics", "state_changed"), 600)
        if ev.kind == "state_changed" and ev.state in ("failed", "finished"):
            raise RuntimeError(f"run {ev.state}: {ev.reason}")
        if ev.kind == "step_metrics":
            steps.append(ev)
    step_s = med([m.times.total for m in steps[args.skip:]])
    pauses = []
    for _ in range(args.pauses):
        await asyncio.sleep(random.uniform(0, 1.5 * step_s))
        while not inbox.empty():
            inbox.get_nowait()  # drop what arrived while waiting
        sent = time.time()
        await client.send(Pause())
        acc, res = await until(lambda e: e.kind == "command_result" and e.command == "pause")
        if res.status != "accepted":
            print(f"pause rejected: {res.reason}")
            continue
        got, ev = await until(lambda e: e.kind == "state_changed" and e.state == "paused")
        pauses.append({"accepted_s": acc - sent, "emitted_s": ev.ts - sent, "received_s": got - sent, "at_step": ev.step})
        await asyncio.sleep(0.2)
        await client.send(Resume())
        await until(lambda e: e.kind == "state_changed" and e.state == "running")
    await client.send(Stop(checkpoint=False))
    try:
        await until(lambda e: e.kind == "state_changed" and e.state in ("finished", "failed"), 60)
    except (RuntimeError, asyncio.TimeoutError):
        pass
    task.cancel()
    await client.close()
    return pauses


def drive_run(args, home: Path) -> dict:
    """Start the default run headless, let it take --steps steps, then pause/resume it --pauses times."""
    from backend.protocol import decode_event
    from backend.protocol.paths import socket_path

    run_id = "bench-sync"
    env = {**os.environ, "RLC_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    os.environ["RLC_HOME"] = str(home)  # socket_path() reads it
    home.mkdir(parents=True, exist_ok=True)
    out_file = home / "events.jsonl"
    with open(out_file, "w") as out, open(home / "stderr.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "backend", "run", "--headless", "--json", "--run-id", run_id,
                                 "--max-steps", str(args.steps + 1000)], stdout=out, stderr=err, env=env, cwd=ROOT)
    try:
        pauses = asyncio.run(pause_cycles(args, proc, socket_path(run_id), home))
        proc.wait(timeout=60)  # it was asked to stop
    finally:  # never leave the run behind
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    # the share of the step, from the run's own --json stream (steps before the first pause only)
    events = [decode_event(x) for x in out_file.read_text().splitlines() if x.startswith("{")]
    metrics = [e for e in events if e.kind == "step_metrics"][: args.steps][args.skip:]
    return {"steps": [{"step": m.step, **m.times.model_dump()} for m in metrics], "pauses": pauses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,5m,25m,50m,100m", help=f"comma-separated, of: {', '.join(SIZES)}")
    ap.add_argument("--reps", type=int, default=7, help="timed pushes per size, after one warm-up push (default 7)")
    ap.add_argument("--steps", type=int, default=40, help="steps of the default run for the sync share (default 40)")
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the medians (default 5)")
    ap.add_argument("--pauses", type=int, default=10, help="pause/resume cycles (default 10)")
    ap.add_argument("--no-run", action="store_true", help="only the sync-vs-size table")
    ap.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    ap.add_argument("--gpu", default=None, metavar="DIR[,DIR]", help="GPU mode: these model directories (see above)")
    ap.add_argument("--gpu-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.reps, Path(args.work))), flush=True)
        return 0
    if args.gpu_child:
        print("RESULT " + json.dumps(gpu_child(args.gpu_child, args.reps)), flush=True)
        return 0
    if args.gpu:
        rows = gpu_table(args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return 0 if rows and all(all(r["bit_equal_to_load_weights"]) for r in rows) else 1
    if bad := [x for x in args.sizes.split(",") if x not in SIZES]:
        ap.error(f"unknown size(s) {bad}; choose from {list(SIZES)}")
    random.seed(0)  # the pause moments
    import torch
    import vllm

    work = Path(tempfile.mkdtemp(prefix="rlc-bench-sync-", dir="/tmp"))
    result: dict = {"vllm": vllm.__version__, "torch": torch.__version__, "cpus": os.cpu_count(), "loadavg": [os.getloadavg()[0]]}
    try:
        print(f"weight sync into LocalVLLMEngine, CPU x{os.cpu_count()}, vllm {vllm.__version__}, torch {torch.__version__}, "
              f"float32, 1 torch thread; median of {args.reps} pushes (load average {os.getloadavg()[0]:.2f}, shared machine)")
        print(f"{'size':>5} {'params M':>9} {'MB':>8} {'push ms':>9} {'min-max':>14} {'GB/s':>6} {'bare ms':>8} {'fp ms':>8} "
              f"{'canary ms':>9} {'canary Δ':>9} {'start s':>7}")
        result["sizes"] = sizes_table(args, work)
        print("(push: engine.push_weights, what a step pays after fp; bare: engine.llm.collective_rpc(worker_load) with the same "
              "tensors, no layer; fp: state_tensors + fingerprint on the trainer side; canary: engine prompt log-probs of 4 "
              "sequences + transformers forward, median of 3 warm calls, and max |Δlogprob| after the last push)")
        if not args.no_run:
            run = drive_run(args, work / "home")
            result.update(run)
            s, p = run["steps"], run["pauses"]
            part = {k: med([x[k] for x in s]) * 1e3 for k in ("total", "generate", "score", "train", "sync")}
            share = [x["sync"] / x["total"] for x in s if x["total"] > 0]
            print(f"\nembedded default run, steps {s[0]['step']}-{s[-1]['step']} (first {args.skip} skipped), medians: "
                  f"step {part['total']:.1f} ms = generate {part['generate']:.1f} + score {part['score']:.1f} + train "
                  f"{part['train']:.1f} + sync {part['sync']:.1f} ms")
            print(f"sync / step: median {med(share) * 100:.2f}% (min {min(share) * 100:.2f}%, max {max(share) * 100:.2f}%)"
                  f"   goal <= 2%: {'met' if med(share) <= 0.02 else 'NOT met'}")
            for key, label in (("accepted_s", "accepted"), ("emitted_s", "'paused' emitted"), ("received_s", "'paused' received")):
                v = [x[key] * 1e3 for x in p] or [float("nan")]
                print(f"pause latency, sent -> {label:18} median {med(v):7.1f} ms   max {max(v):7.1f} ms   ({len(p)} pauses)")
            print(f"(a pause applies at the next step boundary: expect <= one step, {part['total']:.1f} ms median here)")
        result["loadavg"].append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
