#!/usr/bin/env bash
# Every GPU check and figure in one call, for a machine with one NVIDIA GPU, most important first:
#   1. tests/test_cuda.py (graph replay == eager, skip inside the graph, compiled, exact resume
#      under --deterministic), then two eager runs of the same settings with and without
#      --deterministic (where torch refuses any kernel that has no deterministic form)
#   2. ELECTRA-Small at the paper's batch 128 x 128, bf16: the transformers-built step against ours
#   3. Small with the generator's half on a second CUDA stream (its backward beside the
#      discriminator's), each half compiled on its own, against stage 2
#   4. ELECTRA-Base at 32 x 512, bf16: throughput and peak memory against the same baseline, then
#      where its compiled step's time goes, kernel by kind (Base is further from its target)
#   5. Small under --deterministic (fixed-order kernels): what exact repeatability costs
#   6. Small with --compile-mode max-autotune but without coordinate-descent tuning (which alone
#      outlasted 114 s of compiling; the whole mode, 220 s), against stage 2
#   7. while time is left: the generator's vocabulary stage (previous formulation against
#      current), two compiled runs of the same settings with and without --deterministic, Base
#      with activation checkpointing (memory against stage 4's), Small without inductor's
#      combo_kernels (on by default on CUDA), a kernel profile of the compiled Small step,
#      aggressive_fusion on Small, `electra pretrain` itself on prepared data (DATA=folder),
#      autotuned Base, the eager variants, fine-tuning Base on SST-2 in fp32 and bf16
#      (SST2=folder)
# Results (tables, JSON, logs) go under $OUT (default ./gpu-results); the last thing printed is
# benchmarks/gpu_summary.py's digest of all of them (also $OUT/summary.md). Each stage has its
# own time limit and the whole suite a budget (BUDGET seconds, default 480): a stage that would
# start past the budget is skipped, one that fails is logged and the next runs.
# Usage: DATA=prepared-folder SST2=glue-sst2-folder bash benchmarks/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
budget="${BUDGET:-480}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log="$out/suite.log"

stage() {  # stage NAME LIMIT_S COMMAND...: run it if the budget allows, log everything
    local name=$1 limit=$2
    shift 2
    if ((SECONDS + 30 > budget)); then
        echo "== $name: skipped, ${SECONDS}s of ${budget}s used" | tee -a "$log"
        return
    fi
    ((limit > budget - SECONDS)) && limit=$((budget - SECONDS))
    echo "== $name (at ${SECONDS}s, limit ${limit}s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== $name: exit ${PIPESTATUS[0]} at ${SECONDS}s" | tee -a "$log"
}

bench() {  # bench NAME LIMIT_S ARGS...: the throughput table for one shape
    local name=$1 limit=$2
    shift 2
    stage "$name" "$limit" "$py" benchmarks/pretrain_throughput.py --precision bf16 --json "$out/$name.json" "$@"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    torch.cuda.get_device_name(), 'transformers', transformers.__version__)" 2>&1 | tee -a "$log"

stage cuda-tests 120 "$py" -m pytest -q -p no:cacheprovider -p no:logging tests/test_cuda.py
stage determinism-eager 60 "$py" benchmarks/determinism.py --device cuda --eager
bench small 160 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 150 \
    --variants transformers,ours-compiled-graph
bench small-streams 150 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 140 \
    --variants ours-graph-streams,ours-compiled-graph-streams
bench base 160 --preset base --batch 32 --seq 512 --steps 20 --warmup 5 --timeout 150 \
    --variants transformers,ours-compiled-graph
bench base-profile 150 --preset base --batch 32 --seq 512 --steps 20 --warmup 5 --timeout 140 \
    --variants ours-compiled --profile "$out/profile-base"
bench small-deterministic 120 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 110 \
    --variants ours-compiled-graph --deterministic
bench small-autotuned 230 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 220 \
    --variants ours-autotuned-graph --inductor coordinate_descent_tuning=False
stage vocab-stage 90 "$py" benchmarks/vocab_stage.py --compile --steps 100 --json "$out/vocab-stage.json"
stage determinism 120 "$py" benchmarks/determinism.py --device cuda
bench base-checkpointed 120 --preset base --batch 32 --seq 512 --steps 20 --warmup 5 --timeout 110 \
    --variants ours-compiled-checkpointed
bench small-nocombo 120 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 110 \
    --variants ours-compiled-graph --inductor combo_kernels=False
bench small-profile 90 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 80 \
    --variants ours-compiled --profile "$out/profile-small"
bench small-aggressive 120 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 110 \
    --variants ours-compiled-graph --inductor aggressive_fusion=True
if [[ -n "${DATA:-}" ]]; then
    run="$(mktemp -d)/run"
    stage pretrain-loop 150 "$py" -m electra pretrain --data "$DATA" --out "$run" --preset small --max-steps 1000 \
        --log-every 100 --eval-every 1000000 --checkpoint-every 1000000 --compile --quiet
    [[ -f "$run/metrics.jsonl" ]] && cp "$run/metrics.jsonl" "$out/pretrain-loop.jsonl"
fi
bench base-autotuned 300 --preset base --batch 32 --seq 512 --steps 20 --warmup 5 --timeout 290 \
    --variants ours-autotuned-graph
bench small-eager 200 --preset small --batch 128 --seq 128 --steps 100 --warmup 10 --timeout 150 \
    --variants ours,ours-graph
if [[ -f "${SST2:-}/train.tsv" ]]; then
    stage finetune-base 120 "$py" benchmarks/finetune_throughput.py --preset base --examples 8192 --data "$SST2"
fi
echo "== done in ${SECONDS}s" | tee -a "$log"
"$py" benchmarks/gpu_summary.py "$out" 2>&1 | tee "$out/summary.md"
