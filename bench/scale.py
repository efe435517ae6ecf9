"""How rl-console's step grows with the work, on one GPU: step time and its split for several
models at two batch sizes, synchronous and overlapped, in one invocation.

    python bench/scale.py [--models smollm2-135m-instruct,/tmp/qwen-0.5b,/tmp/qwen-1.5b]
                          [--prompts 16,64] [--modes sync,overlap] [--steps 20] [--json-out FILE]

Each cell is one headless rl-console run (`bench/vs_trl.py`'s loop: profiles/smollm2-gpu.toml,
G = 8, ≤ 32 tokens, the model and batch size changed). A packaged model (SmolLM2) runs its chat
task; a directory holding prompts.jsonl (a random Qwen2 built by `bench/gpu_throughput.py
--build-only --size 0.5b|1.5b`) runs the plain-text `char_match` task, which measures cost only.
"overlap" is `training.overlap = true` (on a GPU the engine then runs in a process of its own).

Prints a markdown table: model, prompts × G, mode, median step (steps 4..N), generate / train /
sync medians (for overlap, generate is what the update did not hide), sync share of the step,
sync GB/s, rollout tokens/s, mean GPU utilisation (NVML), and for overlap its steps/s over the
synchronous cell of the same model and batch. GPU only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl  # noqa: E402


def cell(model: str, prompts: int, mode: str, steps: int, extra: list[str] | None = None) -> dict:
    path = vs_trl.model_dir(model)
    task = "length" if (Path(path) / "prompts.jsonl").exists() else "chat"
    args = SimpleNamespace(model_dir=path, prompts=prompts, G=8, max_tokens=32, lr=3e-5, seed=0, steps=steps, task=task,
                           set=extra)
    res = vs_trl.run_console(args, overlap=mode == "overlap")
    res["summary"] = vs_trl.summarize(res, vs_trl.REWARDS[task])
    res["cell"] = {"model": Path(model).name, "prompts": prompts, "mode": mode, "task": task}
    return res


def row(res: dict, sync_step: float | None) -> str:
    c, s = res["cell"], res["summary"]

    def ms(key: str) -> str:
        v = s.get(key)
        return f"{v * 1000:.0f}" if v is not None else "–"

    speed = f"{sync_step / s['median_step_s']:.2f}×" if sync_step and s.get("median_step_s") and c["mode"] == "overlap" else ""
    util = f"{res['gpu_util_mean']:.0f}%" if res.get("gpu_util_mean") is not None else "–"
    gbs = f"{s['sync_gb_per_s']:.0f}" if s.get("sync_gb_per_s") else "–"
    share = f"{s['sync_share_median']:.1%}" if s.get("sync_share_median") is not None else "–"
    tps = f"{s['median_tokens_per_s']:,.0f}" if s.get("median_tokens_per_s") else "–"
    return (f"| {c['model']} | {c['prompts']}×8 | {c['mode']} | {ms('median_step_s')} | {ms('median_generate')} | "
            f"{ms('median_train')} | {ms('median_sync')} | {share} | {gbs} | {tps} | {util} | {speed} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", default="16,64")
    ap.add_argument("--modes", default="sync,overlap")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json-out")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a profile override for every cell, e.g. training.micro_batches=4 (repeatable)")
    args = ap.parse_args()
    header = ("| model | batch | mode | step ms | generate ms | train ms | sync ms | sync share | sync GB/s | "
              "tokens/s | GPU util | vs sync |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    results, lines, failed = [], [], 0
    for model in args.models.split(","):
        for prompts in (int(p) for p in args.prompts.split(",")):
            sync_step = None
            for mode in args.modes.split(","):
                print(f"== {Path(model).name} {prompts}x8 {mode}", flush=True)
                res = cell(model, prompts, mode, args.steps, args.set)
                if res["rc"] != 0 or not res["rows"]:
                    failed += 1
                    print(f"   failed (rc {res['rc']}, {len(res['rows'])} steps)", flush=True)
                if mode == "sync":
                    sync_step = res["summary"].get("median_step_s")
                results.append(res)
                lines.append(row(res, sync_step))
                print(lines[-1], flush=True)
                if args.json_out:
                    Path(args.json_out).write_text(json.dumps(results, indent=1))
    print(header)
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
