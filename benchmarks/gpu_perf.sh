#!/usr/bin/env bash
# Performance runs on the lent GPU machine (H100), results under $OUT:
#   kernel: seerflex bench kernel, static and auto compile, no per-layer NaN sync, CUDA-graph replay
#           + benchmarks/perf_experiments.py (64 vs 128-token blocks, index order, top-k)
#   ttft:   seerflex bench ttft, Llama-3.1-8B shape, 32k/64k/128k
#   kernel4: v4 static kernels at 8k/32k/128k (the 128k static OOM fix), 64- and 128-token blocks
#   ttft2:   TTFT with the v3+ path and the attention-free ceiling (Amdahl bound)
#   kernel5: the default policy with a dense last row at 32k/128k; profile of gate + policy at 128k
#   ttft3:   TTFT with 128-token blocks (not run yet)
#   arch:    after the runtime/compile refactor (2026-11-30, H200): static, auto and eager layers checked against
#            the float64 masked reference, and the HF path end to end (TTFT, 4 layers)
# On 2026-11-25 each of these calls was chained with gpu_smollm2.sh stash (one GGUF part per call).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD COLUMNS=200
case "$1" in
kernel)
  python -m seerflex.cli bench kernel --lengths 8192 16384 32768 65536 131072 --densities 0.2 0.1 0.05 \
    --compile static --no-finite-check --out "$OUT"/bench_kernel_v3_static.json
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 \
    --compile auto --no-finite-check --out "$OUT"/bench_kernel_v3_auto.json
  python benchmarks/perf_experiments.py --lengths 8192 32768 131072 --out "$OUT"/perf_experiments_v3.json ;;
kernel4)
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 0.05 \
    --compile static --no-finite-check --out "$OUT"/bench_kernel_v4_static.json
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 --block-size 128 \
    --compile static --no-finite-check --out "$OUT"/bench_kernel_v4_static_b128.json ;;
kernel5)  # v5: policies keep the last row dense by default; where the 128k overhead goes
  python -m seerflex.cli bench kernel --lengths 32768 131072 --densities 0.1 \
    --compile static --no-finite-check --out "$OUT"/bench_kernel_v5_static.json
  python benchmarks/profile_overhead.py --seq-len 131072 | tee "$OUT"/profile_overhead_128k.txt ;;
ttft2)
  python -m seerflex.cli bench ttft --lengths 32768 65536 131072 --densities 0.1 0.05 --no-finite-check \
    --out "$OUT"/bench_ttft_v2.json ;;
ttft3)
  python -m seerflex.cli bench ttft --lengths 65536 131072 --densities 0.1 0.05 --block-size 128 --no-finite-check \
    --out "$OUT"/bench_ttft_v3_b128.json ;;
arch)
  python -m seerflex.cli bench kernel lengths=[8192,32768,131072] densities=[0.1] compile=static --no-check-finite \
    out="$OUT"/bench_kernel_arch_static.json
  python -m seerflex.cli bench kernel lengths=[32768] densities=[0.1,0.5] compile=auto out="$OUT"/bench_kernel_arch_auto.json
  python -m seerflex.cli bench kernel lengths=[8192] densities=[0.1] compile=eager out="$OUT"/bench_kernel_arch_eager.json
  python -m seerflex.cli bench ttft lengths=[32768] densities=[0.1] layers=4 repeats=2 --no-check-finite \
    out="$OUT"/bench_ttft_arch_4layers.json ;;
ttft)
  python -m seerflex.cli bench ttft --lengths 32768 65536 131072 --densities 0.1 0.05 --no-finite-check \
    --out "$OUT"/bench_ttft_v2.json ;;
esac
