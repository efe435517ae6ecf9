"""What does the engine layer cost on rollouts? Generated tokens/s through
`LocalVLLMEngine.generate` (what the training loop calls) against bare `vllm.LLM.generate`,
in one process, on one machine, with the same model, prompt token ids, n, max_tokens and
seeded sampling (temperature, top_p, seed), so both paths generate the very same tokens.

The baseline is the engine's own `vllm.LLM` (`engine.llm`), called directly. One engine
object serves both paths, so the engine kwargs (float32, enforce_eager, no prefix caching,
max_model_len, seed), the environment from `prepare_env` (in-process engine, KV-cache size),
the KV cache, the compiled kernels and the torch thread count are the same by construction:
the only difference left is our layer (lock, SamplingParams from `Sampling`, conversion of the
outputs to `GeneratedCompletion`). Two vLLM engines side by side in one CPU process would
share the cores and double the KV cache; one engine after another would not be interleaved.
Calls alternate engine/bare (the first of each pair alternates too) after warm-up, so drift
and background load hit both; medians and the ratio (goal >= 0.95) are reported.

Model: the embedded tiny Qwen2 (cached under $RLC_HOME/models, built on first use) or, with
--hidden-size/--layers, a random Qwen2 of that shape built into a temp dir. Nothing is
downloaded. Prompts: the embedded task's prompts (`c>`, 2 tokens) or --prompt-len synthetic ids.

    .venv/bin/python bench/rollout.py [--prompts 16] [--n 8] [--max-tokens 32] [--reps 20]
        [--hidden-size 512 --layers 8] [--prompt-len 24] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_model(args, work: Path) -> tuple[Path, int, str]:
    """(model dir, max_model_len, description)."""
    from backend.protocol.paths import home
    from backend.training.tiny_model import TinyModelSpec, build_model, ensure_model

    need = (args.prompt_len or 2) + args.max_tokens
    if args.hidden_size is None and args.layers is None and need <= 64:
        path, _ = ensure_model(home() / "models", TinyModelSpec())  # what the embedded default run uses
        return path, 64, "embedded tiny Qwen2 (h128, 2 layers)"
    h, layers = args.hidden_size or 128, args.layers or 2
    if h % 64:
        raise SystemExit("--hidden-size must be a multiple of 64 (head size 64: vLLM-CPU's supported sizes)")
    max_len = max(64, -(-need // 64) * 64)
    spec = TinyModelSpec(hidden_size=h, num_layers=layers, num_heads=h // 64, num_kv_heads=max(1, h // 256),
                         intermediate_size=2 * h, max_position_embeddings=max_len)
    return build_model(work / "model", spec), max_len, f"random Qwen2 h{h}, {layers} layers (built locally)"


def make_prompts(args, model_dir: Path) -> list[list[int]]:
    if args.prompt_len:
        return [[4 + (i * 7 + j * 3) % 40 for j in range(args.prompt_len)] for i in range(args.prompts)]
    from transformers import AutoTokenizer

    from backend.training import demo_task

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [tok(p, add_special_tokens=False)["input_ids"] for p in demo_task.prompts(args.prompts, seed=0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per call (default 16, the default step)")
    ap.add_argument("--n", type=int, default=8, help="completions per prompt (default 8)")
    ap.add_argument("--max-tokens", type=int, default=32, help="max generated tokens per completion (default 32)")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per path, interleaved (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per path first (default 2)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--logprobs", action="store_true", help="ask both paths for sampling log-probs (logprobs=0)")
    ap.add_argument("--hidden-size", type=int, default=None, help="build a bigger random Qwen2 (multiple of 64)")
    ap.add_argument("--layers", type=int, default=None, help="layers of the bigger model (default 2)")
    ap.add_argument("--prompt-len", type=int, default=None, help="synthetic prompts of this many token ids")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the default profile)")
    ap.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from backend.engine.base import Sampling, request_seed
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions

    work = Path(tempfile.mkdtemp(prefix="rlc-bench-rollout-", dir="/tmp"))
    engine = None
    try:
        model_dir, max_len, model_desc = make_model(args, work)
        prompt_ids = make_prompts(args, model_dir)
        model_desc += f", {(model_dir / 'model.safetensors').stat().st_size / 4e6:.1f}M params"  # float32 on disk
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        engine = LocalVLLMEngine(str(model_dir), EngineOptions(max_model_len=max_len, cache_root=str(work / "cache")))
        start_s = time.perf_counter() - t0

        from vllm import SamplingParams

        sampling = Sampling(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=-1,
                            max_tokens=args.max_tokens, seed=args.seed, logprobs=args.logprobs)
        # the same per-prompt seeds the engine derives (backend.engine.base.request_seed)
        bare_params = [SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=-1,
                                      max_tokens=args.max_tokens, seed=request_seed(args.seed, i),
                                      logprobs=0 if args.logprobs else None) for i in range(len(prompt_ids))]
        llm = engine.llm  # the baseline: the very same vllm.LLM, called directly
        inputs = [{"prompt_token_ids": ids} for ids in prompt_ids]

        def run_engine() -> tuple[int, list]:
            groups = engine.generate(prompt_ids, sampling)
            toks = [[c.token_ids for c in g] for g in groups]
            return sum(len(t) for g in toks for t in g), toks

        def run_bare() -> tuple[int, list]:
            outs = llm.generate(inputs, bare_params, use_tqdm=False)
            toks = [[list(c.token_ids) for c in o.outputs] for o in outs]
            return sum(len(t) for g in toks for t in g), toks

        paths = {"engine": run_engine, "bare": run_bare}
        for _ in range(args.warmup):
            for fn in paths.values():
                fn()
        same_params = repr(engine.last_sampling_params) == repr(bare_params[0])
        rates: dict[str, list[float]] = {k: [] for k in paths}
        secs: dict[str, list[float]] = {k: [] for k in paths}
        tokens: dict[str, list] = {}
        ntok: dict[str, int] = {}
        for rep in range(args.reps):
            order = ["engine", "bare"] if rep % 2 == 0 else ["bare", "engine"]
            for name in order:
                t = time.perf_counter()
                ntok[name], tokens[name] = paths[name]()
                dt = time.perf_counter() - t
                secs[name].append(dt)
                rates[name].append(ntok[name] / dt)
        load1 = os.getloadavg()[0]
    finally:
        if engine is not None:
            engine.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    paired = [e / b for e, b in zip(rates["engine"], rates["bare"])]
    ratio = med(rates["engine"]) / med(rates["bare"])
    import vllm

    print(f"\nrollout: {model_desc}; {len(prompt_ids)} prompts ({len(prompt_ids[0])} tokens) x n={args.n} x max "
          f"{args.max_tokens} tokens; float32, enforce_eager, no prefix caching, max_model_len {max_len}; "
          f"{args.threads} torch thread(s); sampling log-probs {'on' if args.logprobs else 'off'}")
    print(f"vllm {vllm.__version__}, torch {torch.__version__}, {platform.machine()} CPU x{os.cpu_count()}; "
          f"engine start {start_s:.1f} s; load average {load0:.2f} -> {load1:.2f} (shared machine)")
    print(f"{args.reps} timed calls per path, interleaved, after {args.warmup} warm-up calls each\n")
    print(f"{'path':40} {'tokens/call':>11} {'median tok/s':>12} {'min-max tok/s':>16} {'median ms':>9} {'vs bare':>7}")
    rows = (("bare vllm.LLM.generate (engine.llm)", "bare"), ("LocalVLLMEngine.generate", "engine"))
    for label, k in rows:
        r = rates[k]
        print(f"{label:40} {ntok[k]:11d} {med(r):12.0f} {f'{min(r):.0f}-{max(r):.0f}':>16} {med(secs[k]) * 1e3:9.1f} "
              f"{med(r) / med(rates['bare']):7.3f}")
    same_tokens = tokens["engine"] == tokens["bare"]
    print(f"\nratio engine/bare (medians): {ratio:.3f}   median of per-pair ratios: {med(paired):.3f}   "
          f"goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}")
    print(f"same SamplingParams: {'yes' if same_params else 'NO'}; same generated tokens: {'yes' if same_tokens else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": model_desc, "max_model_len": max_len, "prompts": len(prompt_ids), "prompt_tokens": len(prompt_ids[0]),
            "n": args.n, "max_tokens": args.max_tokens, "threads": args.threads, "logprobs": args.logprobs,
            "reps": args.reps, "warmup": args.warmup, "vllm": vllm.__version__, "torch": torch.__version__,
            "engine_start_s": start_s, "loadavg": [load0, load1], "tokens_per_call": ntok,
            "tokens_per_s": rates, "call_s": secs, "median_tokens_per_s": {k: med(v) for k, v in rates.items()},
            "ratio": ratio, "paired_ratio_median": med(paired), "same_sampling_params": same_params,
            "same_tokens": same_tokens}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
