"""What slows a training update when the next rollout generates beside it on the same GPU (CUDA).

`training.overlap` runs step s+1's rollout while the trainer runs step s's update. On one GPU
that only pays if the two halves do not slow each other down by what the overlap hides. This
bench separates the two ways they can: the GPU (two CUDA contexts time-slice it) and the
Python interpreter (vLLM's front end - request bookkeeping, output processing - runs in the
trainer's process when the engine is driven from a thread there, and takes the GIL from the
update's own Python). It times the same update loop (forward, backward and AdamW of a causal
LM in float32, as rl-console trains a policy) and the same rollout (`vllm.LLM.generate`, bf16):

  alone                update loop alone; rollout alone
  inproc               the rollout looping on a thread of this process, vLLM's engine core in
                       this process too (engine.core = "in_process"), on the thread's default stream
  inproc_stream        the same, the rollout thread on a CUDA stream of its own (one context:
                       the GPU may run both halves' kernels at once, no time-slicing)
  thread               the rollout looping on a thread of this process, vLLM's engine core in
                       its own process (what `training.overlap` does with engine.core = "auto")
  process              the rollout looping in another process (the whole engine there)

plus a pure-Python loop beside the rollout thread (how much of the interpreter the front end
takes). One invocation, medians. The gain bound (`overlap_gain`) is what overlapping one
rollout with one update could save at these rates, before any framework's own cost: serial
time (update + rollout, each alone) over the time of both started together. Run it again
under CUDA MPS (`nvidia-cuda-mps-control -d` first) to see the GPU shared without time-slicing.

    python bench/overlap_contention.py --model-dir /tmp/rlc-qwen2-0.5b-random --prompts 16 [--layouts inproc,thread]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
for k, v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(k, v)


def _prompts(n_prompts: int, prompt_len: int, vocab: int) -> list[list[int]]:
    import random

    rng = random.Random(0)
    return [[rng.randrange(100, vocab - 100) for _ in range(prompt_len)] for _ in range(n_prompts)]


def _engine(model_dir: str, gpu_mem: float):
    from vllm import LLM

    return LLM(model=model_dir, dtype="bfloat16", gpu_memory_utilization=gpu_mem, max_model_len=512,
               enable_prefix_caching=False, seed=0)


def _rollout(llm, prompts, n: int, max_tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(n=n, max_tokens=max_tokens, ignore_eos=True, logprobs=0, detokenize=False, temperature=1.0)
    t = time.perf_counter()
    llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - t


def _child(model_dir, gpu_mem, prompts, n, max_tokens, reps, ready, stop, out):
    """The whole engine in this process: time `reps` rollouts alone, signal ready, then
    generate until told to stop."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    llm = _engine(model_dir, gpu_mem)
    for _ in range(2):
        _rollout(llm, prompts, n, max_tokens)
    alone = [_rollout(llm, prompts, n, max_tokens) for _ in range(reps)]
    ready.set()
    times = []
    while not stop.is_set():
        times.append(_rollout(llm, prompts, n, max_tokens))
    out.put((alone, times))


class Update:
    """A causal LM's forward + backward + AdamW on a fixed batch, float32, timed per call."""

    def __init__(self, model_dir: str, batch: int, seq: int, micro: int, autocast: bool = False) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-6)
        vocab = self.model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(100, vocab - 100, (batch, seq), generator=g).cuda()
        self.micro = micro
        self.autocast = autocast

    def __call__(self) -> float:
        torch = self.torch
        t = time.perf_counter()
        for chunk in self.ids.chunk(self.micro):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(input_ids=chunk).logits[:, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, chunk[:, 1:, None]).squeeze(-1)
            (-lp.mean() / self.micro).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return time.perf_counter() - t


def overlap_gain(update: float, rollout: float, update_beside: float, rollout_beside: float) -> float:
    """The most overlap can gain: one update and one rollout started together, each progressing
    at its measured rate beside the other (alone / beside) while both run and at full speed once
    the other is done; serial time / that time."""
    if rollout_beside <= update_beside:  # the rollout ends first; the update finishes alone
        both = rollout_beside + (update - rollout_beside * update / update_beside)
    else:
        both = update_beside + (rollout - update_beside * rollout / rollout_beside)
    return (update + rollout) / both


def _python_loop() -> float:
    t = time.perf_counter()
    x = 0
    for i in range(2_000_000):
        x += i % 7
    return time.perf_counter() - t


def _beside(fn, reps: int, background_running) -> list[float]:
    times = []
    for _ in range(reps):
        if not background_running():
            break
        times.append(fn())
    return times


LAYOUTS = ("inproc", "inproc_stream", "thread", "process")


def _thread_layout(llm, prompts, args, upd, side_stream: bool) -> dict[str, float]:
    """vLLM driven from a rollout thread of this process, looping while the update loop is timed."""
    import torch

    med = statistics.median
    for _ in range(2):
        _rollout(llm, prompts, args.n, args.max_tokens)
    alone = [_rollout(llm, prompts, args.n, args.max_tokens) for _ in range(args.reps)]
    stop = threading.Event()
    gen_times: list[float] = []

    def loop() -> None:
        stream = torch.cuda.Stream() if side_stream else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            while not stop.is_set():
                gen_times.append(_rollout(llm, prompts, args.n, args.max_tokens))

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    time.sleep(0.5)
    upd_t = _beside(upd, args.reps, th.is_alive)
    py_t = _beside(_python_loop, 5, th.is_alive)
    stop.set()
    th.join()
    return {"rollout_alone": med(alone), "update_beside": med(upd_t),
            "rollout_beside": med(gen_times[1:]) if len(gen_times) > 1 else float("nan"), "python_beside": med(py_t)}


def _process_layout(prompts, args, upd) -> dict[str, float]:
    med = statistics.median
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_child, args=(args.model_dir, args.gpu_mem, prompts, args.n, args.max_tokens, args.reps,
                                         ready, stop, out))
    p.start()
    if not ready.wait(600):
        p.kill()
        raise RuntimeError("the engine process did not start")
    time.sleep(0.5)
    upd_t = _beside(upd, args.reps, p.is_alive)
    stop.set()
    alone, times = out.get(timeout=120)
    p.join(60)
    return {"rollout_alone": med(alone), "update_beside": med(upd_t),
            "rollout_beside": med(times[1:]) if len(times) > 1 else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="/tmp/rlc-qwen2-0.5b-random")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--micro", type=int, default=1, help="micro-batches per update")
    ap.add_argument("--autocast", action="store_true", help="the update under bf16 autocast (float32 master weights)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"which of {', '.join(LAYOUTS)}")
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--gpu-mem", type=float, default=0.25)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    layouts = [x for x in args.layouts.split(",") if x]
    if bad := [x for x in layouts if x not in LAYOUTS]:
        ap.error(f"unknown layout(s) {', '.join(bad)}; choose from {', '.join(LAYOUTS)}")
    import torch

    med = statistics.median
    res: dict[str, float] = {}
    upd = Update(args.model_dir, args.prompts * args.n, args.prompt_len + args.max_tokens, args.micro, args.autocast)
    prompts = _prompts(args.prompts, args.prompt_len, upd.model.config.vocab_size)
    for _ in range(3):
        upd()
    res["update_alone"] = med([upd() for _ in range(args.reps)])
    res["python_alone"] = med([_python_loop() for _ in range(5)])
    print(f"update alone {res['update_alone'] * 1e3:.1f} ms; python loop alone {res['python_alone'] * 1e3:.1f} ms", flush=True)
    from backend.engine import vllm_compat

    def engine(own_core: bool):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if own_core else "0"
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
        vllm_compat.fresh_env()
        return _engine(args.model_dir, args.gpu_mem)

    runs: dict[str, dict[str, float]] = {}
    if "inproc" in layouts or "inproc_stream" in layouts:  # vLLM's engine core in this process: one engine for both
        llm = engine(own_core=False)
        for name in ("inproc", "inproc_stream"):
            if name in layouts:
                runs[name] = _thread_layout(llm, prompts, args, upd, side_stream=name == "inproc_stream")
        vllm_compat.shutdown_engine(llm)
        torch.cuda.empty_cache()
    if "thread" in layouts:
        llm = engine(own_core=True)
        runs["thread"] = _thread_layout(llm, prompts, args, upd, side_stream=False)
        vllm_compat.shutdown_engine(llm)
        torch.cuda.empty_cache()
    if "process" in layouts:
        runs["process"] = _process_layout(prompts, args, upd)
    for name in layouts:
        r = runs[name]
        r["gain"] = overlap_gain(res["update_alone"], r["rollout_alone"], r["update_beside"], r["rollout_beside"])
        if "python_beside" in r:
            r["gil_share"] = 1 - res["python_alone"] / r["python_beside"]
        print(f"{name}: rollout alone {r['rollout_alone'] * 1e3:.1f} ms; update beside it {r['update_beside'] * 1e3:.1f} ms; "
              f"rollout beside {r['rollout_beside'] * 1e3:.1f} ms; gain bound {r['gain']:.2f}x"
              + (f"; vLLM took {r['gil_share'] * 100:.0f}% of the interpreter" if "gil_share" in r else ""), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": res, "layouts": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
