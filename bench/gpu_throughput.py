"""Rollout throughput on a GPU: rl-console's engine layer vs bare `vllm.LLM.generate`.

Builds a random ~0.5B Qwen2-shaped model with a BPE tokenizer trained locally on the
standard library's sources (no hub), then generates realistic GRPO shapes (default 64
prompts × 8 completions × 256 tokens, bf16). Each mode runs in its own process (one engine
per process, as in a real run); `--mode both` runs them back to back and prints the table.

  python3 bench/gpu_throughput.py --mode both [--prompts 64 --n 8 --max-tokens 256]

The loop asks the engine for sampling log-probs only when TRL will read them
(`off_policy_mask_threshold`); both variants are measured. `engine` mode also measures weight sync of the whole model into the running engine (time,
GB/s, canary check) and samples GPU utilisation through NVML during generation.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
for k, v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(k, v)


# Qwen2.5 shapes (and SmolLM2-135M's as a Qwen2): hidden, intermediate, layers, heads, kv heads, tied embeddings
SIZES = {"135m": (576, 1536, 30, 9, 3, True), "0.5b": (896, 4864, 24, 14, 2, False), "1.5b": (1536, 8960, 28, 12, 2, True)}


def build(model_dir: Path, size: str = "0.5b") -> list[str]:
    """A random Qwen2 of Qwen2.5-0.5B (415M with a 32k vocabulary) or -1.5B shapes (or SmolLM2-135M's) + a local BPE
    tokenizer, and `prompts.jsonl` (2,048 lines of the standard library's sources); returns prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:200]
    lines = [ln.strip() for f in files for ln in open(f, errors="ignore") if 30 <= len(ln.strip()) <= 160]
    if not (model_dir / "prompts.jsonl").exists() and (model_dir / "config.json").exists():
        (model_dir / "prompts.jsonl").write_text("".join(json.dumps({"prompt": ln}) + "\n" for ln in lines[:2048]))
    if (model_dir / "config.json").exists():
        return lines
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(files, trainers.BpeTrainer(vocab_size=32000, show_progress=False, special_tokens=["<|endoftext|>"],
                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(model_dir)
    eos = tok.token_to_id("<|endoftext|>")
    hidden, inter, layers, heads, kv, tied = SIZES[size]
    cfg = Qwen2Config(vocab_size=((len(fast) + 127) // 128) * 128, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      tie_word_embeddings=tied, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(model_dir)
    (model_dir / "prompts.jsonl").write_text("".join(json.dumps({"prompt": ln}) + "\n" for ln in lines[:2048]))
    return lines


class UtilSampler:
    """NVML utilisation at 4 Hz while generation runs (the same reader as GpuStats)."""

    def __init__(self) -> None:
        from backend.telemetry.gpu import probe

        self.nvml, self.handles, _ = probe()
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self):
        if self.nvml is not None:
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self.samples.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self.handles[0]).gpu))

    def __exit__(self, *exc):
        self._stop.set()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def run_mode(mode: str, args) -> dict:
    import torch

    model_dir = Path(args.model_dir)
    prompts_text = build(model_dir)[: args.prompts]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"][:64] for p in prompts_text]
    common = dict(dtype="bfloat16", max_model_len=args.max_tokens + 128, enforce_eager=False,
                  gpu_memory_utilization=args.gpu_mem, seed=0)
    out: dict = {"mode": mode, "gpu": torch.cuda.get_device_name(0), "prompts": len(prompt_ids), "n": args.n,
                 "max_tokens": args.max_tokens}
    t0 = time.perf_counter()
    if mode.startswith("bare"):
        import vllm
        from vllm import LLM, SamplingParams

        llm = LLM(model=str(model_dir), **common)
        out["vllm"] = vllm.__version__
        params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0,
                                logprobs=0 if mode == "bare-logprobs" else None)
        run = lambda: sum(len(c.token_ids) for o in llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False) for c in o.outputs)  # noqa: E731
    else:
        from backend.engine.base import Sampling
        from backend.engine.local import LocalVLLMEngine
        from backend.engine.options import EngineOptions

        llm = LocalVLLMEngine(str(model_dir), EngineOptions(device="cuda", **common))
        out["vllm"] = llm.info.name
        sampling = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=args.max_tokens, seed=0,
                            logprobs=mode == "engine-logprobs")
        run = lambda: sum(len(c.token_ids) for g in llm.generate(prompt_ids, sampling) for c in g)  # noqa: E731
    out["engine_start_s"] = time.perf_counter() - t0
    run()  # warm-up
    rates = []
    with UtilSampler() as util:
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            t = time.perf_counter()
            tokens = run()
            torch.cuda.synchronize()
            rates.append(tokens / (time.perf_counter() - t))
    rates.sort()
    out.update(tokens_per_s=rates[len(rates) // 2], tokens_per_s_all=rates, gen_tokens=tokens, gpu_util_mean=util.mean())
    if mode == "engine":
        out.update(sync_bench(llm, model_dir, prompt_ids))
    llm = None
    return out


def sync_bench(engine, model_dir: Path, prompt_ids) -> dict:
    """Push the whole model into the running engine; time it; check the canary."""
    import torch
    from transformers import AutoModelForCausalLM

    from backend.engine import weight_sync

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(1.01)
    times, fp_times = [], []
    for i in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        tensors = weight_sync.state_tensors(hf)
        checksum, nbytes = weight_sync.fingerprint(tensors)
        fp_times.append(time.perf_counter() - t)
        report = engine.push_weights(tensors, i + 1, checksum)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    seqs = [ids[:32] for ids in prompt_ids[:4]]
    t = time.perf_counter()
    got = engine.prompt_logprobs(seqs)
    with torch.no_grad():
        worst = 0.0
        for seq, g in zip(seqs, got):
            inp = torch.tensor([seq], device="cuda")
            lp = torch.log_softmax(hf(input_ids=inp).logits[0, :-1].float(), -1).gather(1, inp[0, 1:, None])[:, 0].tolist()
            worst = max(worst, max(abs(a - b) for a, b in zip(lp, g)))
    canary_s = time.perf_counter() - t
    t = time.perf_counter()
    engine.pause()
    engine.resume()
    pause_s = time.perf_counter() - t
    times.sort()
    return {"sync_s": times[len(times) // 2], "sync_all_s": times, "fingerprint_s": sorted(fp_times)[2], "sync_bytes": nbytes,
            "sync_gb_per_s": nbytes / times[len(times) // 2] / 1e9, "sync_method": report.method,
            "params_m": sum(p.numel() for p in hf.parameters()) / 1e6, "canary_max_diff": worst, "canary_s": canary_s,
            "engine_pause_resume_s": pause_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["both", "bare", "bare-logprobs", "engine", "engine-logprobs"], default="both")
    ap.add_argument("--model-dir", default="/tmp/rlc-qwen2-0.5b-random")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu-mem", type=float, default=0.5)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--build-only", action="store_true", help="only build the model (for a GRPO run on it)")
    ap.add_argument("--size", choices=list(SIZES), default="0.5b", help="the random model's shapes (with --build-only)")
    args = ap.parse_args()
    if args.build_only:
        build(Path(args.model_dir), args.size)
        return 0
    if args.mode != "both":
        print("RESULT " + json.dumps(run_mode(args.mode, args)), flush=True)
        return 0
    build(Path(args.model_dir))
    results = {}
    for mode in ("bare", "engine", "bare-logprobs", "engine-logprobs"):
        cmd = [sys.executable, __file__, "--mode", mode] + [a for a in sys.argv[1:] if a not in ("--mode", "both")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            return 1
        results[mode] = json.loads(line[7:])
    e, b, bl, el = results["engine"], results["bare"], results["bare-logprobs"], results["engine-logprobs"]
    print(f"GPU: {e['gpu']}   {e['vllm']}   {e['prompts']} prompts × {e['n']} × {e['max_tokens']} tokens, bf16, CUDA graphs")
    print(f"{'path':46} {'tokens/s':>10} {'vs bare':>7} {'GPU util':>8}")
    rows = (("bare vllm.LLM.generate", b, b), ("rl-console engine layer (what the loop asks)", e, b),
            ("bare vllm.LLM.generate, logprobs=0", bl, bl), ("rl-console engine layer, logprobs=0", el, bl))
    for name, r, base in rows:
        util = f"{r['gpu_util_mean']:.0f}%" if r.get("gpu_util_mean") is not None else "-"
        print(f"{name:46} {r['tokens_per_s']:10.0f} {r['tokens_per_s'] / base['tokens_per_s']:7.3f} {util:>8}")
    print(f"weight sync of {e['params_m']:.0f}M params ({e['sync_bytes'] / 1e9:.2f} GB, {e['sync_method']}): "
          f"{e['sync_s'] * 1000:.1f} ms median = {e['sync_gb_per_s']:.1f} GB/s (fingerprint {e['fingerprint_s'] * 1000:.1f} ms); "
          f"canary max |Δlogprob| {e['canary_max_diff']:.3f} in {e['canary_s'] * 1000:.0f} ms; engine pause+resume {e['engine_pause_resume_s'] * 1000:.2f} ms")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
