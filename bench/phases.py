"""Run a Python program with timers around the work a GRPO step shares with every loop:
vLLM's `LLM.generate` and `collective_rpc` (the weight load), TRL's `training_step` (all but the
optimizer and the callbacks), `_generate_and_score_completions` (rollout, rewards, advantages),
`_calculate_rewards` and `compute_loss`, accelerate's `backward` and the optimizer's `step`; and
each collection of Python's cyclic garbage collector ("gc").
At exit, each one's calls (start and end on the system's monotonic clock, thread CPU seconds,
and for `generate` the number of prompts) are written as JSON to
$RLC_BENCH_PHASES. `bench/overhead.py --phases` runs both loops under it, so a gap between them
can be placed: in the shared work (the same calls got slower) or around it.

  python bench/phases.py -m backend run ...      # like python -m backend run ...
  python bench/phases.py bench/overhead.py ...    # like python bench/overhead.py ...
  python bench/phases.py --summary FILE           # per call: count, median wall and CPU ms

In rl-console's own process the console's parts of a step are timed too: the step boundary
(`StepLoop.before_rollout`: commands, the weight push, the sampling parameters), its weight push
(`StepLoop.sync`), the engine layer's `generate` (vLLM's call and the conversion of its
outputs), the rollout function as TRL calls it, and the console's handling of the rollout and
of the scored batch (`rollout_done`, `scored`): with the shared work above, what is left of
TRL's `_generate_and_score_completions` is TRL's own.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import sys
import time
from collections import defaultdict

CALLS: dict[str, list[tuple[float, float, float, int]]] = defaultdict(list)  # (start, end: time.monotonic; CPU s; batch)


def _wrap(owner, name: str, key: str) -> None:
    fn = getattr(owner, name)

    def timed(*a, **k):
        c0, w0 = time.thread_time(), time.monotonic()
        try:
            return fn(*a, **k)
        finally:
            batch = len(a[1]) if key == "generate" else 0  # how many prompts
            CALLS[key].append((w0, time.monotonic(), time.thread_time() - c0, batch))

    setattr(owner, name, timed)


def _gc_timer(phase: str, info: dict) -> None:
    """Python's cyclic garbage collector: each collection as a call (batch = its generation)."""
    if phase == "start":
        _gc_start[0] = time.monotonic()
    else:
        CALLS["gc"].append((_gc_start[0], time.monotonic(), time.monotonic() - _gc_start[0], info["generation"]))


_gc_start = [0.0]


def _write() -> None:
    with open(os.environ["RLC_BENCH_PHASES"], "w") as f:
        json.dump(CALLS, f)


def summary(path: str, skip: int = 5) -> None:
    """Per timed call: how many, and the median wall and CPU milliseconds (the first `skip`
    calls of each left out: start-up)."""
    import statistics

    with open(path) as f:
        calls = json.load(f)
    print(f"{'call':32s} {'n':>5s} {'wall ms':>9s} {'CPU ms':>9s}")
    for key, rows in calls.items():
        rows = rows[skip:] if len(rows) > 2 * skip else rows
        if not rows:
            continue
        wall = statistics.median(e - s for s, e, _, _ in rows) * 1e3
        cpu = statistics.median(c for _, _, c, _ in rows) * 1e3
        print(f"{key:32s} {len(rows):5d} {wall:9.2f} {cpu:9.2f}")


def main() -> None:
    if sys.argv[1:2] == ["--summary"]:
        summary(sys.argv[2])
        return
    import accelerate
    import torch
    import trl
    import vllm

    _wrap(trl.GRPOTrainer, "training_step", "training_step")
    _wrap(trl.GRPOTrainer, "_generate_and_score_completions", "rollout+score")
    _wrap(vllm.LLM, "generate", "generate")
    _wrap(vllm.LLM, "collective_rpc", "collective_rpc")
    _wrap(trl.GRPOTrainer, "_calculate_rewards", "rewards")
    _wrap(trl.GRPOTrainer, "compute_loss", "loss forward")
    _wrap(accelerate.Accelerator, "backward", "backward")
    _wrap(torch.optim.AdamW, "step", "optimizer")
    try:  # rl-console's own parts (absent in a bare loop's process: nothing to time there)
        from backend.engine.local import LocalVLLMEngine
        from backend.training.step import StepLoop
        from backend.training.trainer import RolloutFunc
    except ImportError:
        pass
    else:
        _wrap(StepLoop, "before_rollout", "console boundary")
        _wrap(StepLoop, "sync", "console sync")
        _wrap(LocalVLLMEngine, "generate", "engine layer generate")
        _wrap(RolloutFunc, "__call__", "rollout_func")
        _wrap(StepLoop, "rollout_done", "console rollout_done")
        _wrap(StepLoop, "scored", "console scored")
    gc.callbacks.append(_gc_timer)
    atexit.register(_write)
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
