#!/usr/bin/env bash
# Long-context fine-tuning (issue 16) and the corpus-mixture gates (issue 15) on the lent GPU machine, in calls
# that follow each other within its warm window (each may carry at most 64 MiB with the ~32 MB tree):
#   stash: carry .whl .assets/gguf/p0 .assets/gguf/sha256 -> gguf wheel installed, GGUF part 0 kept in /tmp/parts
#   stash: carry .assets/gguf/p1 .assets/corpus.tgz      -> part 1, the corpus unpacked (then p2 alike)
#   ft:    carry .assets/gguf/p3 -> GGUF reassembled + checked, then the
#          SmolLM2 8k -> 32k YaRN x4 fine-tunes (same data, steps, seed): seerflex at 0.1 and 0.5, dense (no gates)
#   after: distil gates on the dense fine-tune (the distil-after route), 32k perplexity per held-out domain and
#          passkey at 16k / 32k for every route; then the SmolLM2 gates on the corpus mixture (8k)
#   speed: 12-step runs side by side (dense SDPA, dense flex, d 0.1 with full / sampled / no gate target) for step
#          time and peak memory
#   profile: a torch-profiler kernel table of a d 0.1 step and a dense one
#   ft_long: the distilled-start density 0.1 run and the dense one at 200 steps
#   kernels: flex forward + backward at the fine-tune's shape, today's backward tiles vs autotuned vs FLASH (after
#            gpu_perf.sh fa4a, fa4b: carry .whl/b2)
#   speed3: step time with the 3-stage backward tiles, and 128 x 128 blocks on FLASH (FA4 from the kernels call)
#   profile3: profiles of the FLASH step and the SDPA one (superseded by speed4)
#   speed4: after the training plan compiled as one graph: GPU check, step times side by side, the FLASH profile
#   check5, speed5: after the whole training layer became one compiled graph each way (SPEEDS=...)
#   speed6: host levers side by side (finetune_variant.py); speed7, check6: the recipe's CUDA-graph switch, its GPU check
#   alloc: issue 15, per-layer allocations fitted on training text (loss-sensitivity budget vs XAttention's), per domain
#   acc:   issue 15 on the GPU: 4 held-out 8k windows per domain, every scorer and rule, and rules calibrated on train text
#   speed2: the same side by side once the layers' per-call host syncs left the training path, with a sync report
#   ft2:   d 0.1 with the sampled gate target, fresh gates and gates distilled on the base model; ft2eval: their evals
# Since v16 (2026-12-02) the recipe replays the sparse layers as CUDA graphs once the schedule ends (cuda_graphs=true):
# the earlier stages' runs had none; add cuda_graphs=false to repeat them as they were.
# Re-entrant: a finished run (export/ present) is skipped, a cut one resumes from its checkpoint, so a call that
# runs out of time is continued by calling the same stage again.
# Locally first: bash ../shared/tools/split_for_device.sh <gguf> .assets/gguf 24 (4 parts: the tree is ~32 MB); pip download --no-deps -d .whl gguf;
#   tar czf .assets/corpus.tgz -C ~/.cache/seerflex/corpus .
set -euo pipefail
source "$(dirname "$0")/device_lib.sh"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD SEERFLEX_CACHE=/tmp/cache COLUMNS=160
RUN=/tmp/run
CORPUS=/tmp/cache/${CORPUS_NAME:-corpus}  # CORPUS_NAME=corpus_v1: the first corpus (.assets/corpus_v1.tgz)
L=${LEN:-32768}  # LEN=1024 STEPS=2 SCHEDULE=1 OUT=/tmp/o: a quick local check of every command line
FT_ARGS="recipes/finetune_smollm2.yaml data=corpus:$CORPUS seq_len=$L steps=${STEPS:-80}
    schedule_steps=${SCHEDULE:-25} warmup_steps=10 checkpoint_every=20"
FT="python -m seerflex.cli finetune $FT_ARGS"
HELD="corpus:$CORPUS:split=heldout:domains"
E="python -m seerflex.cli eval ppl window=$L prefix=$((L / 32)) windows=2"  # 32k perplexity, loss after 1024

finetune() {  # name, extra keys: run (or resume) one fine-tune, keep its metrics
  local name=$1; shift
  local dir=$RUN/$name
  if [ ! -d $dir/export ]; then
    local again=""; [ -d $dir ] && again="resume=true"  # a cut run continues (from step 0 if no checkpoint yet)
    $FT output_dir=$dir $again "$@"
  fi
  mkdir -p "$OUT"/$name && cp $dir/metrics.jsonl $dir/recipe.json "$OUT"/$name/
}

eval_ft() {  # name, density: 32k perplexity per held-out domain of a fine-tune's export, dense and its gates
  for d in prose docs code; do
    [ -d $RUN/eval/ppl_$1_$d ] || $E model=$RUN/$1/export/model adapter=$RUN/$1/export/seerflex text=$HELD=$d \
      scorers=dense,gate policies=topk:$2 out=$RUN/eval/ppl_$1_$d
  done
}

profile() {  # output file, extra keys: the recipe's last two steps under the profiler (6 steps, no schedule)
  local out=$1; shift
  python benchmarks/profile_finetune.py --out "$OUT"/$out $FT_ARGS steps=6 schedule_steps=0 warmup_steps=2 \
    checkpoint_every=100 overwrite=true "$@" | tail -30
}

speed() {  # name, extra keys: 12 steps at the final density from the start (no schedule), for step time and memory
  local dir=$RUN/speed_$1; shift
  $FT steps=12 schedule_steps=0 warmup_steps=2 checkpoint_every=100 output_dir=$dir overwrite=true "$@"
  mkdir -p "$OUT"/$(basename $dir) && cp $dir/metrics.jsonl $dir/recipe.json "$OUT"/$(basename $dir)/
}

setup() {  # the GGUF from its carried parts (checked), the corpus, the device's description
  mkdir -p /tmp/cache/smollm2 $CORPUS /tmp/parts
  if [ -d .assets/gguf ]; then cp .assets/gguf/p*/part.* /tmp/parts/; fi
  G=/tmp/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f $G ] || reassemble $G "$(cat .assets/gguf/sha256 2>/dev/null || cat /tmp/parts/sha256)" /tmp/parts/part.*
  [ -f $CORPUS/manifest.json ] || tar xzf .assets/${CORPUS_NAME:-corpus}.tgz -C $CORPUS
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT"/device.txt || echo cpu > "$OUT"/device.txt
  python -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" \
    >> "$OUT"/device.txt
}

case "$1" in
stash)  # whatever this call carries: the gguf wheel (installed), GGUF parts and their sha256, the corpus (unpacked)
  if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  fi
  mkdir -p /tmp/parts && cp .assets/gguf/p*/part.* /tmp/parts/ 2>/dev/null || true
  if [ -f .assets/gguf/sha256 ]; then cp .assets/gguf/sha256 /tmp/parts/; fi
  for t in .assets/corpus*.tgz; do  # each carried corpus into /tmp/cache/<its name>
    [ -f $t ] && mkdir -p /tmp/cache/$(basename $t .tgz) && tar xzf $t -C /tmp/cache/$(basename $t .tgz)
  done
  ls /tmp/parts ;;
ft)  # the first runs (2026-12-01) computed the gates' target on every row: kl_rows=1
  setup
  python benchmarks/check_flex_backward.py --out "$OUT"/check_flex_backward.json
  finetune ft_d0.1 density=0.1 kl_rows=1
  finetune ft_d0.5 density=0.5 kl_rows=1
  finetune ft_dense gates=false ;;
speed)  # step time and peak memory side by side: dense SDPA, dense flex, density 0.1 with the full / sampled target
  setup
  speed sdpa gates=false
  if nvidia-smi > /dev/null 2>&1; then speed flex gates=false dense_attention=flex_attention; fi  # no CPU backward
  speed d0.1_rows1 density=0.1 kl_rows=1
  speed d0.1 density=0.1
  speed d0.1_nokl density=0.1 kl_weight=0 kl_rows=0.01 ;;
speed2)  # after the host syncs left the training path: dense SDPA, dense flex, d 0.1 side by side, and a profile
  setup
  speed sdpa_2 gates=false
  if nvidia-smi > /dev/null 2>&1; then speed flex_2 gates=false dense_attention=flex_attention; fi
  speed d0.1_2 density=0.1
  profile profile_d0.1_2.txt density=0.1 output_dir=$RUN/profile ;;
speed3)  # after the backward's 3-stage tiles (kernels stage): dense SDPA, dense flex, d 0.1 side by side; with FA4
  # installed (by the kernels stage) also d 0.1 on 128 x 128 blocks, whose backward FLASH runs
  setup
  speed sdpa_3 gates=false
  speed flex_3 gates=false dense_attention=flex_attention
  speed d0.1_3 density=0.1
  if [ -f /tmp/sc/sitecustomize.py ]; then
    export PYTHONPATH=/tmp/sc:$PWD
    speed d0.1_b128_flash density=0.1 seerflex.block_size=128
  fi ;;
profile3)  # next: where the FLASH step's 0.37 s goes (after the kernels stage installed FA4): its profile, SDPA's
  export PYTHONPATH=/tmp/sc:$PWD
  profile profile_d0.1_b128_flash.txt density=0.1 seerflex.block_size=128 output_dir=$RUN/profile_b128
  profile profile_sdpa_3.txt gates=false output_dir=$RUN/profile_sdpa ;;
speed4)  # after the training gate, policy and backward indices became one compiled graph per layer (carry .whl/b2,
  # after stash x3 and gpu_perf.sh fa4a, fa4b): the training route's GPU check, then SDPA, dense flex, d 0.1 on FLASH
  # 128 x 128 and on Triton 64 x 64 side by side, and the FLASH step's profile with seerflex's own ranges
  if [ -d .whl/b2 ]; then bash benchmarks/gpu_perf.sh fa4c; fi
  export PYTHONPATH=/tmp/sc:$PWD
  setup
  python benchmarks/check_flex_backward.py --out "$OUT"/check_flex_backward_4.json | tail -3
  speed sdpa_4 gates=false
  speed flex_4 gates=false dense_attention=flex_attention
  speed d0.1_b128_flash_4 density=0.1 seerflex.block_size=128
  speed d0.1_4 density=0.1
  profile profile_d0.1_b128_flash_4.txt density=0.1 seerflex.block_size=128 output_dir=$RUN/profile_b128
  gzip -f "$OUT"/profile_d0.1_b128_flash_4.trace.json ;;
check5)  # after the training layer became one compiled graph each way (gate, policy, both index sets, BlockMask and
  # flex on CUDA): FA4 (carry .whl/b2, after stash x3 and gpu_perf.sh fa4a, fa4b), the GPU check
  if [ -d .whl/b2 ]; then bash benchmarks/gpu_perf.sh fa4c; fi
  export PYTHONPATH=/tmp/sc:$PWD
  setup
  timeout ${CHECK_S:-400} python benchmarks/check_flex_backward.py --out "$OUT"/check_flex_backward_5.json $CHECK_ARGS \
    2>&1 | grep -v Warning ;;
speed5)  # then side by side: SDPA, dense flex, d 0.1 on FLASH 128 x 128 and on Triton 64 x 64 (SPEEDS picks)
  export PYTHONPATH=/tmp/sc:$PWD
  setup
  for run in ${SPEEDS:-sdpa flex flash triton}; do
    case $run in
    sdpa) speed sdpa_5 gates=false ;;
    flex) speed flex_5 gates=false dense_attention=flex_attention ;;
    flash) speed d0.1_b128_flash_5 density=0.1 seerflex.block_size=128 ;;
    triton) speed d0.1_5 density=0.1 ;;
    esac
  done ;;
speed6)  # host levers of the FLASH 128 x 128 step (benchmarks/finetune_variant.py: plain, cudagraphs, skip_guards,
  # layers, comma-joined to combine); BLOCK=64 for the fused 64 x 64 Triton step (missing since v15); after fa4c
  export PYTHONPATH=/tmp/sc:$PWD
  setup
  for v in ${VARIANTS:-plain cudagraphs skip_guards layers}; do
    dir=$RUN/speed6_$v
    python benchmarks/finetune_variant.py --variant $v $FT_ARGS steps=12 schedule_steps=0 warmup_steps=2 \
      checkpoint_every=100 output_dir=$dir overwrite=true density=0.1 seerflex.block_size=${BLOCK:-128} 2>&1 \
      | grep -v "Warning\|warn(" | tail -${TAIL:-8}
    mkdir -p "$OUT"/speed6_$v && cp $dir/metrics.jsonl $dir/recipe.json "$OUT"/speed6_$v/ || true
  done ;;
speed7)  # next (after check5 or fa4c): the recipe's own CUDA-graph switch with a short schedule (graphs from step 4),
  # side by side with cuda_graphs=false, reserved memory in the metrics; each run in its own $OUT folder
  export PYTHONPATH=/tmp/sc:$PWD
  setup
  for g in ${GRAPHS:-true false true false}; do
    n=$((${n:-0} + 1)); dir=$RUN/speed7_${g}_$n
    $FT steps=14 schedule_steps=4 warmup_steps=2 checkpoint_every=100 output_dir=$dir overwrite=true density=0.1 \
      seerflex.block_size=128 cuda_graphs=$g 2>&1 | grep -v "Warning\|warn(\|━" | tail -4
    mkdir -p "$OUT"/speed7_${g}_$n && cp $dir/metrics.jsonl $dir/recipe.json "$OUT"/speed7_${g}_$n/
  done ;;
check6)  # the learning layer with and without CUDA graphs, every shape (FA4 installed: 128 x 128 on FLASH)
  export PYTHONPATH=/tmp/sc:$PWD
  timeout ${CHECK_S:-400} python benchmarks/check_flex_backward.py --out "$OUT"/check_flex_backward_7.json --learning-only \
    --cuda-graphs 2>&1 | grep -v Warning ;;
alloc)  # issue 15: an allocation across layers the gates own, from loss sensitivity (the mass allocations lost: the
  # oracle's at +21.4%, RESULTS.md). Per domain, all fitted on the *training* split, read on WINDOWS held-out windows:
  # the gates' per-layer top-k budget (layer sensitivity, 30 layers x 7 densities), the gates' top-p fitted per layer
  # to it; XAttention's shared threshold and the gates' top-p at XAttention's allocation, as in the docs transfer.
  # After stash x3. One command at a time, archive refreshed after each (not run yet)
  setup
  A="python -m seerflex.cli eval"
  M="model=smollm2 dtype=float32"
  TRAIN="corpus:$CORPUS:split=train:domains"
  MIX=seerflex/adapters/smollm2-mix
  S="python benchmarks/allocation_swap.py --density 0.1 --window 8192"
  keep() { tar czf "$OUT"/alloc.tgz -C $RUN/alloc .; }
  mkdir -p $RUN/alloc
  for d in ${DOMAINS:-docs prose code}; do
    o=$RUN/alloc/$d; mkdir -p $o
    [ -f $o/budget/budget.json ] || $A budget $M adapter=$MIX scorer=gate policy=topk:0.1 density=0.1 \
      budget_text=$TRAIN=$d budget_windows=1 out=$o/budget; keep
    [ -f $o/gate_at_budget.json ] || $S --allocation $o/budget/budget.json --text $HELD=$d \
      --calibration-text $TRAIN=$d --out $o/gate_at_budget.json; keep
    [ -f $o/xa_cal/calibrate.json ] || $A calibrate $M adapter=$MIX scorer=xattention policy=threshold:density=0.1 \
      budget_text=$TRAIN=$d budget_windows=1 out=$o/xa_cal
    t=$(python -c "import json; print(json.load(open('$o/xa_cal/calibrate.json'))['calibrated']['threshold'])")
    [ -f $o/xa_sp/sparsity.json ] || $A sparsity $M adapter=$MIX scorer=xattention text=$TRAIN=$d window=8192 \
      policy=threshold:$t out=$o/xa_sp
    [ -f $o/gate_at_xattention.json ] || $S --allocation $o/xa_sp/sparsity.json --text $HELD=$d \
      --calibration-text $TRAIN=$d --out $o/gate_at_xattention.json; keep
    [ -f $o/xa_heldout/ppl.json ] || $A ppl $M adapter=$MIX window=8192 prefix=1024 windows=1 text=$HELD=$d \
      scorers=xattention policies=[threshold:$t] out=$o/xa_heldout; keep
  done ;;
acc)  # issue 15 at 8k on the GPU, 4 held-out windows per domain (after stash x3): each scorer under each rule calibrated
  # on the evaluated windows (as the CPU tables), then the transfer test: the gates' per-layer top-p and XAttention's
  # shared threshold calibrated on the domain's *training* split, read on the held-out windows. One command per
  # (domain, scorer, rule) and the archive refreshed after each: on 2026-12-02 one command for all four scorers and
  # rules ran 560 s without finishing, and a cut call returned nothing
  setup
  A="python -m seerflex.cli eval"
  M="model=smollm2 dtype=float32"
  W="window=8192 prefix=1024 windows=${WINDOWS:-4}"
  TRAIN="corpus:$CORPUS:split=train:domains"
  MIX=seerflex/adapters/smollm2-mix
  keep() { tar czf "$OUT"/acc.tgz -C $RUN/acc .; }
  mkdir -p $RUN/acc
  for d in docs code prose; do
    [ -f $RUN/acc/dense_$d/ppl.json ] || $A ppl $M $W text=$HELD=$d scorers=dense out=$RUN/acc/dense_$d; keep
    for s in gate xattention oracle; do
      for r in topk:0.1 topp:density=0.1:per_layer=true threshold:density=0.1; do
        o=$RUN/acc/${d}_${s}_${r//[:=.]/_}
        [ -f $o/ppl.json ] || $A ppl $M adapter=$MIX $W text=$HELD=$d scorers=$s policies=[$r] out=$o; keep
      done
    done
    [ -f $RUN/acc/gate_cal_$d.done ] || { $A calibrate $M adapter=$MIX scorer=gate policy=topp:density=0.1:per_layer=true \
      budget_text=$TRAIN=$d budget_windows=2 save_adapter=$RUN/acc/gate_cal_$d out=$RUN/acc/gate_cal_${d}_json \
      && touch $RUN/acc/gate_cal_$d.done; }
    [ -f $RUN/acc/xa_cal_$d/calibrate.json ] || $A calibrate $M adapter=$MIX scorer=xattention policy=threshold:density=0.1 \
      budget_text=$TRAIN=$d budget_windows=2 out=$RUN/acc/xa_cal_$d
    t=$(python -c "import json; print(json.load(open('$RUN/acc/xa_cal_$d/calibrate.json'))['rows'][0]['policy']['threshold'])")
    [ -f $RUN/acc/transfer_gate_$d/ppl.json ] || $A ppl $M adapter=$RUN/acc/gate_cal_$d $W text=$HELD=$d scorers=gate \
      policies=[adapter] out=$RUN/acc/transfer_gate_$d
    [ -f $RUN/acc/transfer_xa_$d/ppl.json ] || $A ppl $M adapter=$MIX $W text=$HELD=$d scorers=xattention \
      policies=[threshold:$t] out=$RUN/acc/transfer_xa_$d
    keep
  done ;;
ft_long)  # density 0.1 from the distilled gates and the dense fine-tune, both LONG_STEPS (200) steps, evals
  setup
  N=${LONG_STEPS:-200}
  finetune ft_dense_$N gates=false steps=$N
  finetune ft_d0.1_init_$N density=0.1 gates_from=seerflex/adapters/smollm2-mix steps=$N schedule_steps=$((N / 4))
  eval_ft ft_d0.1_init_$N 0.1
  for d in prose docs code; do
    [ -d $RUN/eval/ppl_ft_dense_${N}_$d ] || $E model=$RUN/ft_dense_$N/export/model text=$HELD=$d scorers=dense \
      out=$RUN/eval/ppl_ft_dense_${N}_$d
  done
  tar czf "$OUT"/eval_long.tgz -C $RUN/eval . ;;
kernels)  # the training kernel alone (no model): today's backward tiles vs autotuned ones vs FLASH (after
  # gpu_perf.sh fa4a, fa4b; this call carries .whl/b2 for the FA4 install)
  if [ -d .whl/b2 ]; then bash benchmarks/gpu_perf.sh fa4c; export PYTHONPATH=/tmp/sc:$PWD; fi
  python benchmarks/bench_flex_train.py --out "$OUT"/flex_train.json 2>&1 | grep -v Warning | tail -40 ;;
profile)
  profile profile_d0.1.txt density=0.1 output_dir=$RUN/profile
  profile profile_sdpa.txt gates=false output_dir=$RUN/profile_sdpa ;;
ft2)  # density 0.1 with the sampled target (kl_rows 0.125): fresh gates, and gates distilled on the base model
  setup
  finetune ft_d0.1_rows density=0.1
  finetune ft_d0.1_init density=0.1 gates_from=seerflex/adapters/smollm2-mix ;;
ft2eval)
  eval_ft ft_d0.1_rows 0.1
  eval_ft ft_d0.1_init 0.1
  P="python -m seerflex.cli eval passkey lengths=[$((L / 2)),$L] depths=[0.1,0.3,0.5,0.7,0.9] trials=2"
  $P model=$RUN/ft_d0.1_init/export/model adapter=$RUN/ft_d0.1_init/export/seerflex scorers=dense,gate \
    policies=topk:0.1 out=$RUN/eval/pk_ft0.1init
  tar czf "$OUT"/eval_ft2.tgz -C $RUN/eval . ;;
ft05)  # density 0.5 from the distilled gates, and its evals
  setup
  finetune ft_d0.5_init density=0.5 gates_from=seerflex/adapters/smollm2-mix
  eval_ft ft_d0.5_init 0.5
  tar czf "$OUT"/eval_ft05.tgz -C $RUN/eval . ;;
after)  # eval outputs go to $RUN/eval, then one archive: $OUT returns only so many files
  M=$RUN/ft_dense/export/model
  EV=$RUN/eval
  if [ ! -d $RUN/distill_after/adapter ]; then
    python -m seerflex.cli distill recipes/distill_smollm2_mix.yaml model=$M data=corpus:$CORPUS seq_len=$L \
      batch_size=1 steps=${STEPS:-80} warmup_steps=10 checkpoint_every=20 output_dir=$RUN/distill_after \
      $([ -d $RUN/distill_after ] && echo resume=true)
  fi
  mkdir -p "$OUT"/distill_after && cp $RUN/distill_after/metrics.jsonl $RUN/distill_after/recipe.json "$OUT"/distill_after/
  for d in prose docs code; do
    $E model=$M adapter=$RUN/distill_after/adapter text=$HELD=$d scorers=dense,gate,oracle \
      policies=topk:0.1,topk:0.5 out=$EV/ppl_dense_$d
    for r in 0.1 0.5; do
      $E model=$RUN/ft_d$r/export/model adapter=$RUN/ft_d$r/export/seerflex text=$HELD=$d scorers=dense,gate \
        policies=topk:$r out=$EV/ppl_ft${r}_$d
    done
    $E model=smollm2 text=$HELD=$d scorers=dense out=$EV/ppl_base_$d
  done
  P="python -m seerflex.cli eval passkey lengths=[$((L / 2)),$L] depths=[0.1,0.3,0.5,0.7,0.9] trials=2"
  $P model=$M adapter=$RUN/distill_after/adapter scorers=dense,gate policies=topk:0.1 out=$EV/pk_dense
  $P model=$RUN/ft_d0.1/export/model adapter=$RUN/ft_d0.1/export/seerflex scorers=dense,gate policies=topk:0.1 \
    out=$EV/pk_ft0.1
  tar czf "$OUT"/eval.tgz -C $EV . ;;
mix)  # issue 15: SmolLM2 gates distilled on the corpus mixture (8k), then kept
  if [ ! -d $RUN/mix/adapter ]; then
    python -m seerflex.cli distill recipes/distill_smollm2_mix.yaml data=corpus:$CORPUS output_dir=$RUN/mix \
      $([ -d $RUN/mix ] && echo resume=true) ${MIX_ARGS:-}
  fi
  mkdir -p "$OUT"/mix && cp -r $RUN/mix/adapter $RUN/mix/metrics.jsonl $RUN/mix/recipe.json "$OUT"/mix/ ;;
free)  # issue 15: the mixture gates distilled with the KL over the free blocks only (kl_blocks=free), then read side by
  # side with BASE's gates, XAttention, the oracle and dense on 4 held-out 8k windows per domain, top-k 0.05 / 0.1 /
  # 0.2, and the free recall per layer on code (after stash x3). What ran (2026-12-03):
  #   free_h200_2026-12-03: MIX_ARGS=steps=500 on the first corpus (mixture then a subset fixed per run), BASE = the
  #     whole-row gates of 854b479 (git show 854b479:seerflex/adapters/smollm2-mix/<file>); its gates were bundled
  #     at 99a01a8
  #   wide_h200_2026-12-03: NAME=wide MIX_ARGS=steps=1500 BASE=none on the widened corpus: the gates bundled now,
  #     read alone (the others' rows are the first run's, on the same windows)
  B=${BASE:-seerflex/adapters/smollm2-mix} N=${NAME:-free}
  case $N in base|xattention|oracle) echo "NAME=$N would collide with the base / baseline folders"; exit 2 ;; esac
  setup
  if [ ! -d $RUN/$N/adapter ]; then
    python -m seerflex.cli distill recipes/distill_smollm2_mix.yaml data=corpus:$CORPUS output_dir=$RUN/$N \
      $([ -d $RUN/$N ] && echo resume=true) kl_blocks=free ${MIX_ARGS:-}
  fi
  mkdir -p "$OUT"/$N && cp -r $RUN/$N/adapter $RUN/$N/metrics.jsonl $RUN/$N/recipe.json "$OUT"/$N/
  A="python -m seerflex.cli eval" M="model=smollm2 dtype=float32" W="window=8192 prefix=1024 windows=${WINDOWS:-4}"
  P="policies=[topk:0.05,topk:0.1,topk:0.2]" E=$RUN/free_eval && mkdir -p $E
  keep() { tar czf "$OUT"/free_eval.tgz -C $E .; }
  for d in code docs prose; do
    [ $B = none ] || [ -f $E/base_$d/ppl.json ] || $A ppl $M adapter=$B $W text=$HELD=$d \
      scorers=dense,gate,xattention,oracle $P out=$E/base_$d; keep
    [ -f $E/${N}_$d/ppl.json ] || $A ppl $M adapter=$RUN/$N/adapter $W text=$HELD=$d scorers=gate $P out=$E/${N}_$d
    keep
  done
  for a in $N:$RUN/$N/adapter $([ $B = none ] || echo base:$B); do
    [ -f $E/sparsity_${a%%:*}/sparsity.json ] || $A sparsity $M adapter=${a#*:} window=8192 text=$HELD=code \
      scorer=gate policy=topk:0.1 out=$E/sparsity_${a%%:*}; keep
  done
  [ $B = none ] && exit 0
  for s in xattention oracle; do
    [ -f $E/sparsity_$s/sparsity.json ] || $A sparsity $M window=8192 text=$HELD=code scorer=$s policy=topk:0.1 \
      out=$E/sparsity_$s; keep
  done ;;
esac
