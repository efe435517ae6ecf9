"""Two GPUs of one host: the trainer's weights on GPU 0, the vLLM engine in a Ray actor on GPU 1
(`RayEngine`, `ray.weight_transport = "collective"`: NCCL). Side by side, in one run:

* weight sync: `RayEngine.push_weights` of the whole model (pack into buckets, NCCL broadcast,
  fingerprint on arrival, `load_weights` in the engine) against a bare NCCL broadcast of the
  same bytes over the same communicator (one flat buffer, nothing else) — time and GB/s;
* rollout: `RayEngine.generate` against bare `vllm.LLM.generate` on the same engine object in
  the actor (same SamplingParams; calls alternate), tokens/s, both timed from the driver;
* a verified sync: perturbed weights pushed, then the engine's prompt log-probs against the
  trainer-side HF model on GPU 0.

  python3 bench/two_gpu.py [--model-dir DIR] [--prompts 64 --n 8 --max-tokens 256] [--json-out F]

Builds the random ~0.5B Qwen2 of bench/gpu_throughput.py when DIR has none (no hub).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")

from backend.engine.collective import no_multicast_env  # noqa: E402

no_multicast_env()


def _bare_receive(actor_self, numel: int, dtype: str) -> float:
    """In the actor: receive one flat buffer over the engine's own group; seconds inside."""
    import torch

    buf = torch.empty(numel, dtype=getattr(torch, dtype), device=actor_self._group.device)
    t0 = time.perf_counter()
    actor_self._group.broadcast(buf)
    actor_self._group.wait()
    return time.perf_counter() - t0


def _bare_generate(actor_self, prompt_ids, sampling) -> int:
    """In the actor: bare vllm.LLM.generate on the replica's engine, same SamplingParams."""
    llm = actor_self.engine.llm
    params = actor_self.engine._params(sampling, logprobs=sampling.logprobs)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
    return sum(len(c.token_ids) for o in outs for c in o.outputs)


def hf_logprobs(model, seqs):
    import torch

    out = []
    with torch.no_grad():
        for seq in seqs:
            inp = torch.tensor([seq], device=model.device)
            logits = model(input_ids=inp).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, dim=-1).gather(1, inp[0, 1:, None])[:, 0].tolist())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="/tmp/rlc-qwen2-0.5b-random")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5, help="alternating rollout pairs")
    ap.add_argument("--syncs", type=int, default=10)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: a smoke run of this script on the embedded tiny model (gloo instead of NCCL)")
    args = ap.parse_args()

    import ray
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.engine import weight_sync
    from backend.engine.base import Sampling
    from backend.engine.options import EngineOptions
    from backend.engine.ray_engine import RayEngine
    from backend.settings import RaySection
    from gpu_throughput import build

    dev = args.device
    if dev == "cuda" and torch.cuda.device_count() < 2:
        print(f"needs 2 GPUs; this machine has {torch.cuda.device_count()}")
        return 2
    if dev == "cuda":
        model_dir = Path(args.model_dir)
        lines = build(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"][:64] for p in lines[: args.prompts]]
        res: dict = {"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
        dtype, trainer_dev, cpus = torch.bfloat16, "cuda:0", 4
    else:
        from backend.training.tiny_model import build_model

        model_dir = build_model(Path(args.model_dir))
        prompt_ids = [[5 + i % 20, 6, 7] for i in range(args.prompts)]
        res, dtype, trainer_dev, cpus = {"gpus": []}, torch.float32, "cpu", 1
        torch.set_num_threads(1)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    trainer = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(trainer_dev).eval()
    t0 = time.perf_counter()
    eng = RayEngine(str(model_dir), EngineOptions(device=dev, dtype=str(dtype).removeprefix("torch."),
                                                  max_model_len=args.max_tokens + 128 if dev == "cuda" else 64,
                                                  enforce_eager=dev == "cpu", gpu_memory_utilization=0.85),
                    replicas=1,
                    ray_settings=RaySection(num_cpus_per_engine=cpus, num_gpus_per_engine=1 if dev == "cuda" else 0,
                                            weight_transport="collective"))
    res["engine_start_s"] = time.perf_counter() - t0
    actor = eng.actors[0]
    try:
        st = eng.node_stats()[0]
        res.update(engine=eng.info.name, engine_gpus=eng.engine_gpus, actor_gpu_ids=st["gpu_ids"],
                   trainer_device=str(next(trainer.parameters()).device),
                   nvml_gpus=[(g["index"], g["name"], round(g["mem_used_mb"])) for g in st["gpus"]])
        print(f"engine: {res['engine']} (start {res['engine_start_s']:.0f} s); Ray GPUs for engines: {eng.engine_gpus}; "
              f"actor sees GPU ids {st['gpu_ids']}; trainer on {res['trainer_device']}")
        print("NVML (from the actor's node): " + ", ".join(f"GPU{i} {n} {m} MB used" for i, n, m in res["nvml_gpus"]))

        # ---- weight sync: ours vs a bare broadcast of the same bytes over the same communicator
        tensors = weight_sync.state_tensors(trainer)
        checksum, nbytes = weight_sync.fingerprint(tensors)
        first = eng.push_weights(tensors, 1, checksum)  # forms the NCCL group
        res["first_sync"] = {"s": first.duration_s, "method": first.method, "detail": first.detail}
        ours, fps = [], []
        for v in range(2, 2 + args.syncs):
            sync()
            t = time.perf_counter()
            tensors = weight_sync.state_tensors(trainer)
            checksum, _ = weight_sync.fingerprint(tensors)  # what a training step's sync does first
            fps.append(time.perf_counter() - t)
            rep = eng.push_weights(tensors, v, checksum)
            ours.append(time.perf_counter() - t)
        dtype = str(tensors[0][1].dtype).removeprefix("torch.")
        numel = nbytes // tensors[0][1].element_size()
        flat = torch.empty(numel, dtype=tensors[0][1].dtype, device=trainer_dev)
        bare, bare_inside = [], []
        for _ in range(args.syncs + 1):
            sync()
            t = time.perf_counter()
            ref = actor.__ray_call__.remote(_bare_receive, numel, dtype)
            eng._group.broadcast(flat)
            eng._group.wait()
            inside = ray.get(ref)
            bare.append(time.perf_counter() - t)
            bare_inside.append(inside)
        bare, bare_inside = bare[1:], bare_inside[1:]  # first: warm-up
        med = statistics.median
        res["sync"] = {"bytes": nbytes, "ours_s": med(ours), "ours_all": ours, "fingerprint_s": med(fps),
                       "bare_s": med(bare), "bare_inside_actor_s": med(bare_inside), "method": rep.method,
                       "detail": rep.detail}
        print(f"\nweight sync, {nbytes / 1e9:.3f} GB ({len(tensors)} tensors, {dtype}), median of {args.syncs}:")
        print(f"  rl-console push_weights (fingerprint + pack + {eng._group.backend} + verify + load): "
              f"{med(ours) * 1e3:7.1f} ms  {nbytes / med(ours) / 1e9:6.1f} GB/s   [{rep.method}; {rep.detail}]")
        print(f"  bare {eng._group.backend} broadcast of the same bytes, same communicator (+ one Ray call): "
              f"{med(bare) * 1e3:7.1f} ms  {nbytes / med(bare) / 1e9:6.1f} GB/s   "
              f"(inside the actor {med(bare_inside) * 1e3:.1f} ms = {nbytes / med(bare_inside) / 1e9:.1f} GB/s)")
        print(f"  ratio ours/bare: {med(ours) / med(bare):.2f}   first sync (forms the group): {first.duration_s * 1e3:.0f} ms")

        # ---- a verified sync: perturbed weights in, engine log-probs == trainer's
        g = torch.Generator(device=trainer_dev).manual_seed(0)
        with torch.no_grad():
            for p in trainer.parameters():
                p.add_(torch.randn(p.shape, generator=g, device=trainer_dev, dtype=torch.float32).to(p.dtype) * 1e-2)
        tensors = weight_sync.state_tensors(trainer)
        checksum, _ = weight_sync.fingerprint(tensors)
        eng.push_weights(tensors, 100, checksum)
        canary = [ids + ids[:8] for ids in prompt_ids[:4]]
        want, got = hf_logprobs(trainer, canary), eng.prompt_logprobs(canary)
        worst = max(abs(a - b) for w, gg in zip(want, got) for a, b in zip(w, gg))
        res["canary_max_diff"] = worst
        print(f"verified sync: perturbed weights pushed (v100, checksum {checksum} matched on arrival); "
              f"engine vs trainer log-probs max |Δ| {worst:.3f} ({str(dtype).removeprefix('torch.')})")

        # ---- rollout: our layer vs bare vLLM on the same engine object, alternating
        sampling = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=args.max_tokens, seed=0,
                            logprobs=False)
        ray.get(actor.__ray_call__.remote(_bare_generate, prompt_ids, sampling))  # warm-up
        eng.generate(prompt_ids, sampling)
        r_ours, r_bare = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            toks = ray.get(actor.__ray_call__.remote(_bare_generate, prompt_ids, sampling))
            r_bare.append(toks / (time.perf_counter() - t))
            t = time.perf_counter()
            out = eng.generate(prompt_ids, sampling)
            r_ours.append(sum(len(c.token_ids) for grp in out for c in grp) / (time.perf_counter() - t))
        res["rollout"] = {"ours_tok_s": med(r_ours), "bare_tok_s": med(r_bare), "ours_all": r_ours, "bare_all": r_bare,
                          "shape": [len(prompt_ids), args.n, args.max_tokens]}
        print(f"\nrollout on the engine's {'GPU' if dev == 'cuda' else 'CPU'}, {len(prompt_ids)} prompts × {args.n} × ≤{args.max_tokens} tokens, "
              f"median of {args.reps}:")
        print(f"  bare vllm.LLM.generate (in the actor, same engine): {med(r_bare):9.0f} tokens/s  "
              f"({min(r_bare):.0f}-{max(r_bare):.0f})")
        print(f"  RayEngine.generate (rl-console, from the driver):  {med(r_ours):9.0f} tokens/s  "
              f"({min(r_ours):.0f}-{max(r_ours):.0f})   ratio {med(r_ours) / med(r_bare):.3f}")
        eng.pause()
        eng.resume()
    finally:
        eng.shutdown()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
