#!/usr/bin/env bash
# GPU check of rl-console on a machine with a CUDA GPU and the project's deps importable
# (installed with `scripts/setup.sh --gpu`, or staged wheels on PYTHONPATH).
#   OUT=results/ bash scripts/gpu_smoke.sh
# 1. the tests that can run there (unit + tests/gpu); 2. the embedded default on the GPU for
# 150 steps, headless JSON saved, paused once; 3. ~0.5B random Qwen2 rollouts: the engine
# layer vs bare vllm.LLM.generate, weight sync of the whole model, GPU utilisation.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0} PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RLC_HOME=${RLC_HOME:-/tmp/rlc-gpu-home}
OUT=${OUT:-/tmp/rlc-gpu-out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== 1. tests on the GPU machine"
$PY -m pytest -q -p no:cacheprovider tests/unit tests/gpu -k "not import_names" 2>&1 | tail -15
echo "== 2. embedded default on the GPU (150 steps, paused at step 60)"
$PY bench/live_run.py --steps 150 --pause-at 60 --out "$OUT/embedded_gpu.jsonl"
echo "== 3. ~0.5B rollouts: engine layer vs bare vLLM, weight sync"
$PY bench/gpu_throughput.py --mode both --json-out "$OUT/throughput.json"
