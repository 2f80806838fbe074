#!/usr/bin/env bash
# Runs every speed benchmark of docs/performance.md in sequence and keeps their JSON.
#   bash benchmarks/run_performance.sh [OUT_DIR]      (default docs/perf; ~30 min on 2 cores)
# Run it on an otherwise idle machine: the load average is recorded before each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/perf}"
mkdir -p "$out"
load() { echo "{\"benchmark\": \"load_average\", \"before\": \"$1\", \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"; }
keep() { grep '^{' || true; }
{ load train_step; python benchmarks/train_step_throughput.py 2>&1 | keep; } | tee "$out/train_step.jsonl"
{ load train_step_bf16; python benchmarks/train_step_throughput.py --dtype=bfloat16 --flops=false 2>&1 | keep; } \
  | tee "$out/train_step_bf16.jsonl"
if python -c "import torch" 2>/dev/null; then
  { load torch_vs_jax; python benchmarks/torch_vs_jax.py --size=both 2>&1 | keep; } | tee "$out/torch_vs_jax.jsonl"
  { load torch_vs_jax_1core; python benchmarks/torch_vs_jax.py --size=both --threads=1 2>&1 | keep; } \
    | tee "$out/torch_vs_jax_1core.jsonl"
fi
{ load serving; python benchmarks/serving_latency.py 2>&1 | keep; } | tee "$out/serving.jsonl"
{ load step_scaling; python benchmarks/step_scaling.py --output_dir="$out" 2>&1 | keep; } \
  | tee "$out/step_scaling.jsonl"
{ load evaluator_greedy; python benchmarks/evaluator_greedy.py 2>&1 | keep; } \
  | tee "$out/evaluator_greedy.jsonl"
