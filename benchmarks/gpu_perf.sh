#!/usr/bin/env bash
# Performance runs on the lent GPU machine (H100), results under $OUT:
#   kernel: seerflex bench kernel, static and auto compile, no per-layer NaN sync, CUDA-graph replay
#           + benchmarks/perf_experiments.py (64 vs 128-token blocks, index order, top-k)
#   ttft:   seerflex bench ttft, Llama-3.1-8B shape, 32k/64k/128k
#   kernel4: v4 static kernels at 8k/32k/128k (the 128k static OOM fix), 64- and 128-token blocks
#   ttft2:   TTFT with the v3+ path and the attention-free ceiling (Amdahl bound)
#   kernel5: the default policy with a dense last row at 32k/128k; profile of gate + policy at 128k
#   ttft3:   TTFT with 128-token blocks (not run yet)
#   fa4a, fa4b, flash: FlashAttention-4 wheels in three calls, then Triton vs FLASH (v7); fa4c: the third part, install
#            only; fused: the same install,
#            then v8 (gate + policy + indices in one compiled graph)
#   rect, rect2: after fa4a/fa4b (2026-12-01, H200): 128 x 64 vs 128 x 128 vs 64 x 64 blocks, the whole inference
#            layer as one compiled graph; then TTFT, Triton at 128 x 64 and a kernel profile of the layer
#   TAG=v10 rect, rect3: the same after float16 ranking and the grouped K projection, TTFT of 128 x 64 and 128 x 128
#   pool:    after fa4a/fa4b: the Triton pooling op checked on GPU, then 128 x 128 and 128 x 64 at 32k/128k (v11)
#   interleave: after fa4a, fa4b, in the fa4c call: HEAD and an older commit alternately, 32k, FLASH 128 x 128 (run on
#            2026-12-02 in the order head, old, head, old);
#            locally first: mkdir old_tree && git archive $OLD seerflex ':!seerflex/adapters' | tar -x -C old_tree
#   columns: what the vertical columns cost (the last 64 queries' exact attention per layer): the layer at 32k/128k,
#            density 0.1, vertical=0 and vertical=8 alternately, Triton 128 x 64 (after fa4a/fa4b: add BACKEND=flash)
#   arch:    after the runtime/compile refactor (2026-11-30, H200): static, auto and eager layers checked against
#            the float64 masked reference, and the HF path end to end (TTFT, 4 layers)
# On 2026-11-25 each of these calls was chained with gpu_smollm2.sh stash (one GGUF part per call).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD COLUMNS=200
case "$1" in
kernel)
  python -m seerflex.cli bench kernel --lengths 8192 16384 32768 65536 131072 --densities 0.2 0.1 0.05 \
    --compile static --no-check-finite --out "$OUT"/bench_kernel_v3_static.json
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 \
    --compile auto --no-check-finite --out "$OUT"/bench_kernel_v3_auto.json
  python benchmarks/perf_experiments.py --lengths 8192 32768 131072 --out "$OUT"/perf_experiments_v3.json ;;
columns)  # the deciding measurement for turning vertical=8 on by default (RULER 76% -> 93% for the gates, RESULTS.md)
  for n in 1 2; do
    for v in 0 8; do
      python -m seerflex.cli bench kernel --lengths 32768 131072 --densities 0.1 --q-block-size 128 --vertical $v \
        --backend ${BACKEND:-auto} --compile static --no-check-finite --out "$OUT"/bench_kernel_columns_v${v}_$n.json
    done
  done ;;
kernel4)
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 0.05 \
    --compile static --no-check-finite --out "$OUT"/bench_kernel_v4_static.json
  python -m seerflex.cli bench kernel --lengths 8192 32768 131072 --densities 0.1 --block-size 128 \
    --compile static --no-check-finite --out "$OUT"/bench_kernel_v4_static_b128.json ;;
kernel5)  # v5: policies keep the last row dense by default; where the 128k overhead goes
  python -m seerflex.cli bench kernel --lengths 32768 131072 --densities 0.1 \
    --compile static --no-check-finite --out "$OUT"/bench_kernel_v5_static.json
  python benchmarks/profile_overhead.py --seq-len 131072 | tee "$OUT"/profile_overhead_128k.txt ;;
ttft2)
  python -m seerflex.cli bench ttft --lengths 32768 65536 131072 --densities 0.1 0.05 --no-check-finite \
    --out "$OUT"/bench_ttft_v2.json ;;
ttft3)
  python -m seerflex.cli bench ttft --lengths 65536 131072 --densities 0.1 0.05 --block-size 128 --no-check-finite \
    --out "$OUT"/bench_ttft_v3_b128.json ;;
fa4a)  # FlashAttention-4 wheels in three carried parts (../shared/tools/fa4_wheels.sh .whl; then .whl/b split into
  mkdir -p /tmp/wh && cp .whl/a/* /tmp/wh/ && ls -la /tmp/wh ;;  # b1 = the cu13.* files, b2 = the other wheels,
fa4b)  # so that each call's tree stays under 64 MiB)
  cp .whl/b1/* /tmp/wh/ && ls -la /tmp/wh ;;
fa4c|flash|fused|rect|pool)  # the other wheels (carry .whl/b2), install into /tmp/site, then Triton vs FLASH
  cp .whl/b2/* /tmp/wh/ && cat /tmp/wh/cu13.part.* > /tmp/wh/"$(cat /tmp/wh/cu13.name)" && rm /tmp/wh/cu13.part.*
  (cd /tmp/wh && echo "$(cat cu13.sha256)  $(cat cu13.name)" | sha256sum -c) && rm /tmp/wh/cu13.name /tmp/wh/cu13.sha256
  pip install -q --no-index --no-deps --target /tmp/site /tmp/wh/*.whl
  mkdir -p /tmp/sc && echo 'import site; site.addsitedir("/tmp/site")' > /tmp/sc/sitecustomize.py
  export PYTHONPATH=/tmp/sc:$PWD
  if [ "$1" = fa4c ]; then exit 0; fi  # install only (gpu_finetune.sh kernels), PYTHONPATH=/tmp/sc:$PWD after
  python -c "import flash_attn.cute, seerflex.flex as f, torch; print('flash:', f.flash_unavailable(torch.device('cuda')) or 'available')"
  if [ "$1" = pool ]; then  # v11: Triton pooling in the gate: its GPU check, then the 128-row shapes again
    python benchmarks/check_triton_pool.py --out "$OUT"/check_triton_pool.json
    for shape in "128 128" "128 64"; do set -- $shape
      python -m seerflex.cli bench kernel lengths=[32768,131072] densities=[0.1] compile=static backend=flash \
        q_block_size=$1 block_size=$2 --no-check-finite out="$OUT"/bench_kernel_v11_flash_$1x$2.json
    done
    exit 0
  fi
  if [ "$1" = rect ]; then  # v9: 128 x 64 blocks, the whole layer as one compiled graph, FLASH
    for shape in "128 64" "128 128" "64 64"; do set -- $shape
      python -m seerflex.cli bench kernel lengths=[4096,8192,32768,131072] densities=[0.1] compile=static \
        backend=flash q_block_size=$1 block_size=$2 --no-check-finite out="$OUT"/bench_kernel_${TAG:-rect}_flash_$1x$2.json
    done
    exit 0
  fi
  if [ "$1" = fused ]; then  # v8: gate + policy + indices as one compiled graph (seerflex/plan.py)
    for cfg in "flash 128" "flash 64" "triton 64"; do set -- $cfg
      python -m seerflex.cli bench kernel lengths=[8192,32768,131072] densities=[0.1] compile=static backend=$1 \
        block_size=$2 --no-check-finite out="$OUT"/bench_kernel_fused_${1}_b$2.json
    done
    exit 0
  fi
  for b in triton flash; do
    python -m seerflex.cli bench kernel lengths=[8192,32768,131072] densities=[0.1] compile=static backend=$b \
      --no-check-finite out="$OUT"/bench_kernel_${b}_b64.json
    python -m seerflex.cli bench kernel lengths=[8192,32768,131072] densities=[0.1] compile=static backend=$b \
      block_size=128 --no-check-finite out="$OUT"/bench_kernel_${b}_b128.json
  done
  python -m seerflex.cli bench ttft lengths=[65536,131072] densities=[0.1] backend=flash block_size=128 \
    --no-check-finite out="$OUT"/bench_ttft_flash_b128.json ;;
interleave)  # same machine start, alternating trees: is a change in the layer's total a regression or the machine's?
  [ -d old_tree/seerflex ] || { echo "interleave: no old_tree/seerflex (git archive it first, see the header)"; exit 2; }
  i=0
  for tree in head old old head; do  # balanced order: neither tree always runs first
    i=$((i + 1)); dir=$PWD; [ $tree = old ] && dir=$PWD/old_tree
    (cd $dir && PYTHONPATH=/tmp/sc:$dir python -m seerflex.cli bench kernel lengths=[32768] densities=[0.1] \
      compile=static backend=flash q_block_size=128 block_size=128 --no-check-finite out="$OUT"/interleave_${tree}_$i.json)
  done ;;
arch)
  python -m seerflex.cli bench kernel lengths=[8192,32768,131072] densities=[0.1] compile=static --no-check-finite \
    out="$OUT"/bench_kernel_arch_static.json
  python -m seerflex.cli bench kernel lengths=[32768] densities=[0.1,0.5] compile=auto out="$OUT"/bench_kernel_arch_auto.json
  python -m seerflex.cli bench kernel lengths=[8192] densities=[0.1] compile=eager out="$OUT"/bench_kernel_arch_eager.json
  python -m seerflex.cli bench ttft lengths=[32768] densities=[0.1] layers=4 repeats=2 --no-check-finite \
    out="$OUT"/bench_ttft_arch_4layers.json ;;
rect3)  # after rect with float16 ranking and the grouped K projection: TTFT of both 128-row shapes
  export PYTHONPATH=/tmp/sc:$PWD
  for shape in "128 64" "128 128"; do set -- $shape
    python -m seerflex.cli bench ttft lengths=[65536,131072] densities=[0.1] backend=flash q_block_size=$1 \
      block_size=$2 --no-check-finite out="$OUT"/bench_ttft_v10_flash_$1x$2.json
  done ;;
rect2)  # after rect (same warm machine, FA4 in /tmp/site): TTFT, the Triton kernel at 128 x 64, a profile
  export PYTHONPATH=/tmp/sc:$PWD
  python -m seerflex.cli bench ttft lengths=[65536,131072] densities=[0.1,0.05] backend=flash block_size=64 \
    q_block_size=128 --no-check-finite out="$OUT"/bench_ttft_rect_flash_128x64.json
  python -m seerflex.cli bench kernel lengths=[32768,131072] densities=[0.1] compile=static backend=triton \
    q_block_size=128 block_size=64 --no-check-finite out="$OUT"/bench_kernel_rect_triton_128x64.json
  for s in 32768 131072; do
    python benchmarks/profile_overhead.py --seq-len $s --q-block-size 128 --backend flash | tee "$OUT"/profile_rect_$s.txt
  done ;;
ttft)
  python -m seerflex.cli bench ttft --lengths 32768 65536 131072 --densities 0.1 0.05 --no-check-finite \
    --out "$OUT"/bench_ttft_v2.json ;;
esac
