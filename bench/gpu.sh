#!/usr/bin/env bash
# GPU readiness, one prepared command for a lent NVIDIA machine (torch and transformers only; nothing to install):
# the builtin engine in BF16 and FP16 against Hugging Face generate on a random-weight 1B Llama (no download),
# batch 1, 8 and 32: tokens/s, TTFT, and at batch 1 the share of the HBM-bandwidth bound. About 2-4 minutes.
#
#   bash bench/gpu.sh                          # from the repository root of a copy on the GPU machine
#   bash bench/gpu.sh --device cpu --tiny      # a dry run of the same code path on CPU
#   bash bench/gpu.sh --batches 1,8 --max-tokens 32   # any option of bench/gpu_engine.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" bench/gpu_engine.py "$@"
