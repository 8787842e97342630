#!/usr/bin/env bash
# The SmolLM2 distillation + evaluation as run on the lent GPU machine, in three calls that follow
# each other within the machine's warm window (each call may carry at most 64 MiB):
#   stage1: carry .whl .assets/gguf/p0            -> wheels installed, first half of the GGUF
#   stage2: carry .assets/gguf/p1 .assets/austen  -> GGUF reassembled + checked, gates distilled
#   stage3: (nothing)                             -> perplexity and passkey evaluation on Emma
#   stage3b: carry .assets/adapter_v1             -> v2 (mass target) vs v1 (max target) gates, calibrated
#            top-p / threshold policies next to top-k and the baselines
#   v4 (2026-11-25), calls chained with gpu_perf.sh (each carries one GGUF part):
#   stash:   carry .whl .assets/gguf/pN       -> wheels installed / part N copied to /tmp/parts
#   distill3: carry .assets/gguf/pN .assets/austen.tgz -> reassembled; gates v3 (mass, 500 steps),
#            h128 (gate hidden 128: Q projected), b128 (128-token blocks)
#   eval3:   perplexity sweeps incl. per-layer budgets; b128 vs 64 at equal density
#   eval3pk: passkey vs density and with budgets
#   final / finalpk: the bundled adapter (v3) under the current defaults, after stash x2 + a distill3-style
#            reassembly (call "reassemble")
# Locally: bash ../shared/tools/split_for_device.sh <gguf> .assets/gguf 33; wheels via pip download;
#   tar czf .assets/austen.tgz -C ~/.cache/seerflex/austen .
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD SEERFLEX_CACHE=/tmp/cache COLUMNS=160
RUN=/tmp/run
case "$1" in
stage1)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  mkdir -p /tmp/parts && cp .assets/gguf/p0/part.* /tmp/parts/ ;;
part)  # a middle part, when the working tree leaves room for smaller parts only
  cp .assets/gguf/p*/part.* /tmp/parts/ ;;
stage2)
  mkdir -p /tmp/cache/smollm2 /tmp/cache/austen
  cp .assets/gguf/p*/part.* /tmp/parts/  # carried folders stay on the machine: copy, never concatenate twice
  cat /tmp/parts/part.* > /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat .assets/gguf/sha256)  /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
  cp .assets/austen/*.txt /tmp/cache/austen/
  # LAUNCH="accelerate launch --multi_gpu --num_processes 2" for DDP on two GPUs
  ${LAUNCH:-python} -m seerflex.cli distill recipes/distill_smollm2.yaml output_dir=$RUN/distill ${DISTILL_ARGS:-}
  cp $RUN/distill/metrics.jsonl $RUN/distill/recipe.json "$OUT"/
  cp -r $RUN/distill/adapter "$OUT"/adapter ;;
stage3)
  python -m seerflex.cli eval ppl --adapter $RUN/distill/adapter --text austen:Emma --window 8192 --prefix 1024 \
    --windows 3 --scorers dense,gate,recency,pooled,oracle --policies topk:0.05,topk:0.1,topk:0.2,topk:0.5 --out "$OUT"/ppl
  python -m seerflex.cli eval passkey --adapter $RUN/distill/adapter --lengths 8192 --depths 0.1 0.3 0.5 0.7 0.9 \
    --trials 3 --scorers dense,gate,recency,pooled --policies topk:0.1 --out "$OUT"/passkey ;;
stage3b)
  for name in v2:$RUN/distill/adapter:gate,pooled,oracle v1:.assets/adapter_v1:gate; do
    IFS=: read -r tag adapter scorers <<< "$name"
    python -m seerflex.cli eval ppl --adapter "$adapter" --text austen:Emma --window 8192 --prefix 1024 --windows 3 \
      --scorers "$scorers" --policies topk:0.1,topp:density=0.1,threshold:density=0.1 --out "$OUT"/ppl_$tag
  done
  python -m seerflex.cli eval passkey --adapter $RUN/distill/adapter --lengths 8192 --depths 0.1 0.3 0.5 0.7 0.9 \
    --trials 3 --scorers gate,pooled --policies topk:0.1,topp:density=0.1 --out "$OUT"/passkey ;;
stash)
  if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl; fi
  mkdir -p /tmp/parts && cp .assets/gguf/p*/part.* /tmp/parts/ ;;
reassemble)
  mkdir -p /tmp/cache/smollm2 /tmp/cache/austen /tmp/parts
  cp .assets/gguf/p*/part.* /tmp/parts/
  cat /tmp/parts/part.* > /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat .assets/gguf/sha256)  /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
  tar xzf .assets/austen.tgz -C /tmp/cache/austen ;;
distill3)
  bash "$0" reassemble
  mkdir -p "$OUT"/runs
  D="python -m seerflex.cli distill recipes/distill_smollm2.yaml target=mass"
  $D steps=500 warmup_steps=20 output_dir=$RUN/v3
  $D steps=500 warmup_steps=20 seerflex.gate_hidden_size=128 output_dir=$RUN/h128
  $D steps=300 warmup_steps=20 seerflex.block_size=128 seerflex.policy.local=1 output_dir=$RUN/b128
  for r in v3 h128 b128; do
    mkdir -p "$OUT"/runs/$r && cp $RUN/$r/metrics.jsonl $RUN/$r/recipe.json $RUN/$r/adapter/adapter_config.json "$OUT"/runs/$r/
    cp $RUN/$r/adapter/adapter_model.safetensors "$OUT"/$r.safetensors
  done
  tar czf "$OUT"/runs.tgz -C "$OUT" runs && rm -r "$OUT"/runs ;;
eval3)
  E="python -m seerflex.cli eval ppl --text austen:Emma --window 8192 --prefix 1024 --windows 3"
  $E --adapter $RUN/v3/adapter --scorers dense,gate,recency,pooled,oracle \
    --policies topk:0.05,topk:0.1,topk:0.2,topk:0.5,topp:density=0.1,threshold:density=0.1,budget:0.1 --out "$OUT"/ppl_v3
  $E --adapter $RUN/h128/adapter --scorers gate --policies topk:0.1,topp:density=0.1,budget:0.1 --out "$OUT"/ppl_h128
  $E --adapter $RUN/b128/adapter --scorers gate,pooled,oracle \
    --policies topk:0.05:local=1,topk:0.1:local=1,topk:0.2:local=1 --out "$OUT"/ppl_b128 ;;
eval3pk)
  python -m seerflex.cli eval passkey --adapter ${ADAPTER:-$RUN/v3/adapter} --lengths 8192 --depths 0.1 0.3 0.5 0.7 0.9 \
    --trials 3 --scorers dense,gate,recency,pooled,oracle --policies topk:0.05,topk:0.1,topk:0.2,topk:0.5,budget:0.1 \
    --out "$OUT"/passkey_v3 ;;
final)  # the bundled adapter (= v3) under the current defaults (dense last row): perplexity and passkey
  B=seerflex/adapters/smollm2-austen
  python -m seerflex.cli eval ppl --adapter $B --text austen:Emma --window 8192 --prefix 1024 --windows 3 \
    --scorers dense,gate,recency,pooled,oracle \
    --policies topk:0.05,topk:0.1,topk:0.2,topk:0.5,topp:density=0.1,threshold:density=0.1,budget:0.1 --out "$OUT"/ppl ;;
finalpk)
  python -m seerflex.cli eval passkey --adapter seerflex/adapters/smollm2-austen --lengths 8192 \
    --depths 0.1 0.3 0.5 0.7 0.9 --trials 3 --scorers dense,gate,recency,pooled,oracle \
    --policies topk:0.05,topk:0.1,topk:0.2,topk:0.5,topp:density=0.1,budget:0.1 --out "$OUT"/pk ;;
  # (2026-11-25: this grid outran a 360 s call; what was recorded is the smaller run
  #  --scorers dense,gate,recency,pooled,oracle --policies topk:0.1, in smollm2_v3/final_passkey/)
stage4)  # after stage1/part/stage2-style reassembly: sparsity and needle for the bundled gates
  mkdir -p /tmp/cache/smollm2 /tmp/cache/austen
  cp .assets/gguf/p*/part.* /tmp/parts/
  cat /tmp/parts/part.* > /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat .assets/gguf/sha256)  /tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
  cp .assets/austen/*.txt /tmp/cache/austen/
  python -m seerflex.cli eval sparsity --adapter seerflex/adapters/smollm2-austen --text austen:Emma --window 8192 \
    --policy topk:0.1 --layer 15 --head 0 --out "$OUT"/sparsity
  python -m seerflex.cli eval needle --adapter seerflex/adapters/smollm2-austen --lengths 8192 --depths 0.1 0.5 0.9 \
    --trials 3 --scorers dense,gate,pooled --policies topk:0.1 --out "$OUT"/needle ;;
esac
