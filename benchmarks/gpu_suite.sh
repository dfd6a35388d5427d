#!/usr/bin/env bash
# Every GPU figure in one call (for a machine with one NVIDIA GPU): ELECTRA-Small at the paper's
# batch 128 x 128 and ELECTRA-Base at 32 x 512, bf16 autocast, ours (eager and torch.compile)
# against the transformers-built step, tables written under $OUT (default ./gpu-results).
# Usage: bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >> "$out/gpu.txt"
python benchmarks/pretrain_throughput.py --preset small --batch 128 --seq 128 --precision bf16 --steps 30 \
    --warmup 10 2>&1 | tee "$out/small.txt"
python benchmarks/pretrain_throughput.py --preset base --batch 32 --seq 512 --precision bf16 --steps 20 \
    --warmup 5 2>&1 | tee "$out/base.txt"
