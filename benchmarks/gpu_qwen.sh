#!/usr/bin/env bash
# Issue 15's second model on the lent GPU machine: Qwen2.5-Coder-0.5B-Instruct (32k context, GQA 14/2), gates distilled
# at 16k on the corpus mixture, then perplexity per held-out domain at 32k and the RULER-style suite at 16k / 32k for
# the gates next to XAttention, FlexPrefill, MInference's vertical-slash and the oracle. Calls follow each other within
# the machine's warm window (each may carry at most 64 MiB with the ~23 MB tree):
#   part:    carry .assets/qwen/pN (N = 0 ... 14; the first call also .whl/gguf-*.whl and .assets/qwen/sha256)
#            -> kept in /tmp/qparts
#   apart:   carry .assets/qwen_best/pN or .assets/qwen_wide/pN (a run folder sent back earlier by `send`: its parts
#            moved locally into folders of <= 30 MiB, the sha256 in p0; WHAT=wide) -> /tmp/aparts: the stages below
#            (TAG=_wide for distill_wide: ruler, ppl) then read its adapter instead
#            of distilling again (~185 s)
#   send:    WHAT=distill_best (default; distilled first when missing: carry .assets/corpus.tgz) or distill_$NAME of `loss`:
#            that run folder, without its checkpoint, back through $OUT as 15 MiB parts, in a call of its own (a call
#            returns at most 8 files); locally: source benchmarks/device_lib.sh; restore_parts <files_at> qwen_$WHAT DIR
#   distill: carry .assets/corpus.tgz -> GGUF reassembled + checked (sha256), corpus unpacked, gates distilled
#            (re-entrant: a cut run resumes from its checkpoint when the stage is called again)
#   ppl:     32k perplexity per held-out domain, every scorer at top-k 0.05 / 0.1 / 0.2 (equal achieved density:
#            the same rule and forced blocks, only the ranking differs), then the cumulative-mass rule calibrated to
#            0.1 for the gates, XAttention and the oracle
#   variants: gate designs side by side (VSTEPS steps at 16k each, then top-k 0.1 at 32k per domain; oracle_max too):
#            the 16k / 400-step gates trailed their mass oracle, and their recall stopped rising after ~100 steps
#   best:    the best design (lowest mean rise, benchmarks/best_variant.py) at 32k for longer, read like ppl / ruler
#   vertical: best's gates and XAttention on RULER with exact vertical columns, and with top-p calibrated per task
#   layers:  best's gates, XAttention and the oracle: recall per layer and head on held-out code at 32k, then the
#            gates with the oracle / XAttention swapped into each layer alone (benchmarks/layer_swap.py)
#   loss:    distilled again under another loss (LOSS=kl_blocks=free by default, or row_focus=8; NAME names it), or
#            longer (STEPS=1600 NAME=wide: on the widened corpus, 2026-12-03; under `timeout 570`, called again to go on)
#   output:  the output oracle (seerflex.scorers.oracle_output) beside the mass oracle and XAttention, per domain
#   ruler:   RULER-style tasks at 16k and 32k, every scorer at top-k 0.1, then the gates' calibrated top-p (on
#            2026-12-02 the oracle and top-p runs were a separate call of the same commands)
# Every command's result folder is skipped when present, and $OUT gets a refreshed archive after each.
# Locally first: bash ../shared/tools/split_for_device.sh <qwen gguf> .assets/qwen 32 (seerflex.assets.gguf_path);
#   pip download --no-deps -d .whl gguf; tar czf .assets/corpus.tgz -C ~/.cache/seerflex/corpus .
# Locally (checked for distill): PATH=.venv/bin:$PATH SEERFLEX_CACHE=~/.cache/seerflex RUN=/tmp/r OUT=/tmp/o TAG=_t SEQ=1024
#   STEPS=2 bash benchmarks/gpu_qwen.sh distill (LEN=2048 SHORT=1024 SAMPLES=1 for ppl / ruler)
set -euo pipefail
source "$(dirname "$0")/device_lib.sh"
[ $# -ge 1 ] && [ -n "${OUT:-}" ] || { echo "usage: OUT=DIR [TAG= SEQ= STEPS= VSTEPS= VERTICAL= DESIGN= LOSS= NAME= SWAP_SETS= LEN= SHORT= SAMPLES=] gpu_qwen.sh part|apart|send|distill|variants|best|vertical|layers|loss|output|ppl|ruler"; exit 2; }
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD SEERFLEX_CACHE=${SEERFLEX_CACHE:-/tmp/cache} COLUMNS=160
RUN=${RUN:-/tmp/run}/qwen
CORPUS=$SEERFLEX_CACHE/corpus
L=${LEN:-32768}
HELD="corpus:$CORPUS:split=heldout:domains"
MODEL="model=qwen2.5-coder-0.5b"
D=$RUN/distill${TAG:-}  # TAG=_32k SEQ=32768 STEPS=800: another distillation, read into eval${TAG}
ADAPTER=$D/adapter
V=${VERTICAL:-8}  # key blocks kept in every row as the last row's best columns (the policies' ``vertical``)
# Each design in full, since the recipe's own values moved to the best one (2026-12-03). Runs before 2026-12-03
# night used the whole-row KL (then the default): add kl_blocks=all to repeat one of them.
BASE_GATE="seerflex.gate_type=Qavg_Kmaxminavg seerflex.gate_hidden_size=64"
declare -A DESIGNS=([base]="$BASE_GATE" [h128]="seerflex.gate_type=Qavg_Kmaxminavg seerflex.gate_hidden_size=128"
  [max_target]="$BASE_GATE target=max"
  [qmaxminavg_h128]="seerflex.gate_type=Qavgmaxmin_Kmaxminavg seerflex.gate_hidden_size=128")
SCORERS=gate,xattention,flexprefill,vertical_slash,oracle,oracle_max  # oracle_max: the bound of target=max gates
A="python -m seerflex.cli eval"
E=$RUN/eval${TAG:-}
mkdir -p $E "$OUT"
keep() { tar czf "$OUT"/qwen_eval${TAG:-}.tgz -C $E .; }

setup() {  # the GGUF from its carried parts (checked once), the corpus, the device's description
  local G=$SEERFLEX_CACHE/qwen2.5-coder-0.5b/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf
  mkdir -p "$(dirname $G)" $CORPUS
  [ -f $G ] || reassemble $G "$(cat /tmp/qparts/sha256)" /tmp/qparts/part.*
  [ -f $CORPUS/manifest.json ] || tar xzf .assets/corpus.tgz -C $CORPUS
  for f in /tmp/aparts/qwen_distill_*.sha256; do  # carried run folders (best, wide, ...): read, not distilled again
    [ -f "$f" ] || continue
    n=$(basename $f .sha256) && n=${n#qwen_}
    [ -d $RUN/$n/adapter ] || restore_parts /tmp/aparts qwen_$n $RUN/$n
  done
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT"/device.txt || echo cpu > "$OUT"/device.txt
  python -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)" \
    >> "$OUT"/device.txt
}

distill_into() {  # DIR SEQ STEPS [KEY=VALUE...]: gates distilled into DIR/adapter, resumed where a cut call stopped
  local dir=$1 seq=$2 steps=$3 again=""
  shift 3
  [ -d $dir ] && again="resume=true"
  [ -d $dir/adapter ] || python -m seerflex.cli distill recipes/distill_qwen_coder.yaml data=corpus:$CORPUS \
    seq_len=$seq steps=$steps output_dir=$dir $again "$@"
}

case "$1" in
part)
  if ls .whl/gguf-*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/gguf-*.whl
  fi
  mkdir -p /tmp/qparts && cp .assets/qwen/p*/part.* /tmp/qparts/
  if [ -f .assets/qwen/sha256 ]; then cp .assets/qwen/sha256 /tmp/qparts/; fi
  ls /tmp/qparts | tr '\n' ' ' ;;
apart)
  mkdir -p /tmp/aparts && cp .assets/qwen_${WHAT:-best}/p*/* /tmp/aparts/ && ls /tmp/aparts | tr '\n' ' ' ;;
send)
  w=${WHAT:-distill_best}
  if [ $w = distill_best ]; then setup; distill_into $RUN/$w ${SEQ:-32768} ${STEPS:-400} ${DESIGNS[${DESIGN:-qmaxminavg_h128}]}; fi
  [ -d $RUN/$w/adapter ] || { echo "no $w adapter on this machine"; exit 2; }
  send_back $RUN/$w qwen_$w && ls "$OUT" ;;
distill)
  setup
  distill_into $D ${SEQ:-16384} ${STEPS:-400} ${DESIGNS[base]}
  o="$OUT/$(basename $D)" && mkdir -p "$o" && cp $D/metrics.jsonl $D/recipe.json "$o"/ && cp -r $ADAPTER "$o"/adapter ;;
ppl)
  setup
  W="window=$L prefix=$((L / 32)) windows=1"
  for d in code docs prose; do
    o=$E/ppl_topk_$d
    [ -f $o/ppl.json ] || $A ppl $MODEL adapter=$ADAPTER $W text=$HELD=$d scorers=dense,$SCORERS \
      policies=[topk:0.05,topk:0.1,topk:0.2] out=$o; keep
  done
  for d in code docs prose; do
    for s in gate xattention oracle; do
      o=$E/ppl_topp_${d}_$s
      [ -f $o/ppl.json ] || $A ppl $MODEL adapter=$ADAPTER $W text=$HELD=$d scorers=$s \
        policies=[topp:density=0.1] out=$o; keep
    done
  done ;;
variants)
  setup
  for d in code docs prose; do  # the original's target as a ranking, next to the mass oracle of the ppl stage
    [ -f $E/oracle_max_$d/ppl.json ] || $A ppl $MODEL window=$L prefix=$((L / 32)) windows=1 text=$HELD=$d \
      scorers=dense,oracle_max policies=[topk:0.1] out=$E/oracle_max_$d
  done; keep
  for n in base h128 qmaxminavg_h128 max_target; do  # each design distilled, then read at 32k per domain
    v=$RUN/variant_$n
    distill_into $v ${SEQ:-16384} ${VSTEPS:-150} ${DESIGNS[$n]}
    mkdir -p $E/variant_$n && cp $v/metrics.jsonl $v/recipe.json $E/variant_$n/
    for d in code docs prose; do
      [ -f $E/variant_$n/ppl_$d/ppl.json ] || $A ppl $MODEL adapter=$v/adapter window=$L prefix=$((L / 32)) \
        windows=1 text=$HELD=$d scorers=gate policies=[topk:0.1] out=$E/variant_$n/ppl_$d
    done; keep
  done ;;
best)  # the variants' best design distilled at SEQ (32k) for STEPS, read like the ppl / ruler stages next to dense and
  # XAttention, with and without the vertical columns; the other baselines' rows are the ppl / ruler stages' own.
  # RULER with the columns: the vertical stage
  setup
  n=${DESIGN:-$(python benchmarks/best_variant.py $RUN/eval)}  # DESIGN=name: chosen by an earlier machine's variants
  echo "best design: $n (${DESIGNS[$n]})"
  D=$RUN/distill_best E=$RUN/eval_best && mkdir -p $E && echo "$n ${DESIGNS[$n]}" > $E/design.txt
  distill_into $D ${SEQ:-32768} ${STEPS:-400} ${DESIGNS[$n]}
  cp $D/metrics.jsonl $D/recipe.json $E/ && keep
  W="$MODEL adapter=$D/adapter window=$L prefix=$((L / 32)) windows=1"
  for d in code docs prose; do  # XAttention and dense again beside the gates: the vertical columns side by side
    [ -f $E/ppl_$d/ppl.json ] || $A ppl $W text=$HELD=$d scorers=dense,gate,xattention \
      policies=[topk:0.05,topk:0.1,topk:0.2,topk:0.1:vertical=$V,topp:density=0.1] out=$E/ppl_$d; keep
  done
  R="$A ruler $MODEL adapter=$D/adapter lengths=[${SHORT:-16384},$L] samples=${SAMPLES:-3} haystack=$HELD=prose"
  [ -f $E/ruler/ruler.json ] || $R scorers=dense,gate,xattention,flexprefill,vertical_slash policies=[topk:0.1] \
    out=$E/ruler; keep
  ;;
vertical)  # after best (its adapter; distilled again if this machine has none): the vertical columns, now the last
  # 64 queries' exact attention for every scorer (84ca047), and top-p calibrated on one unscored prompt per task and
  # length (42481e5): 14 prompts x 12 bisection steps per scorer, most of a call each; a cut call resumes at the
  # missing folder
  setup
  n=${DESIGN:-qmaxminavg_h128} D=$RUN/distill_best E=$RUN/eval_best && mkdir -p $E
  distill_into $D ${SEQ:-32768} ${STEPS:-400} ${DESIGNS[$n]}
  R="$A ruler $MODEL adapter=$D/adapter lengths=[${SHORT:-16384},$L] samples=${SAMPLES:-3} haystack=$HELD=prose"
  [ -f $E/ruler_vertical/ruler.json ] || $R scorers=gate,xattention policies=[topk:0.1:vertical=$V] \
    out=$E/ruler_vertical; keep
  for s in gate xattention; do
    [ -f $E/ruler_topp_$s/ruler.json ] || $R scorers=$s policies=[topp:density=0.1] out=$E/ruler_topp_$s; keep
  done ;;
layers)  # where the gates lose, per layer and head: recall of the block-mass map at top-k 0.1 on one held-out 32k code
  # window (where the 32k gates trail their oracle most, RESULTS.md) for the gates, XAttention and the oracle
  setup
  n=${DESIGN:-qmaxminavg_h128} D=$RUN/distill_best E=$RUN/eval_best && mkdir -p $E
  distill_into $D ${SEQ:-32768} ${STEPS:-400} ${DESIGNS[$n]}
  for s in gate xattention oracle; do
    [ -f $E/layers_$s/sparsity.json ] || $A sparsity $MODEL adapter=$D/adapter window=$L text=$HELD=code scorer=$s \
      policy=topk:0.1 out=$E/layers_$s; keep
  done
  for s in oracle xattention; do  # which layers carry the perplexity gap (on SmolLM2 one layer carried half of it)
    [ -f $E/swap_$s/layer_swap.json ] || python benchmarks/layer_swap.py $MODEL adapter=$D/adapter window=$L \
      prefix=$((L / 32)) text=$HELD=code policy=topk:0.1 swap=$s "sets=${SWAP_SETS:-$(seq -s';' 0 23)}" \
      out=$E/swap_$s; keep
  done ;;
loss)  # best's design distilled again under another distillation loss, LOSS (default kl_blocks=free: the KL over the
  # blocks the policy does not keep anyway, which cut the rise by 30-46% at equal steps on SmolLM2, RESULTS.md;
  # row_focus=8 is the other candidate) into distill_$NAME (default free), read beside best's gates (same steps and
  # seed: qwen_h200_2026-12-03/ppl_*) and XAttention, then its recall, lost rows and free recall on code
  setup
  [ -z "${LOSS:-}" ] || [ -n "${NAME:-}" ] || { echo "LOSS=... needs NAME=... (its folders' name)"; exit 2; }
  n=${DESIGN:-qmaxminavg_h128} E=$RUN/eval_best N=${NAME:-free} && F=$RUN/distill_$N && mkdir -p $E
  distill_into $F ${SEQ:-32768} ${STEPS:-400} ${DESIGNS[$n]} ${LOSS:-kl_blocks=free}
  cp $F/metrics.jsonl $E/${N}_metrics.jsonl && cp $F/recipe.json $E/${N}_recipe.json && keep
  for d in code docs prose; do
    [ -f $E/${N}_$d/ppl.json ] || $A ppl $MODEL adapter=$F/adapter window=$L prefix=$((L / 32)) windows=1 \
      text=$HELD=$d scorers=gate,xattention policies=[topk:0.05,topk:0.1,topk:0.2] out=$E/${N}_$d; keep
  done
  for s in ${SPARSE:-gate xattention oracle}; do  # the free recall of the new gates and both others (SPARSE=gate: the
    # gates alone, where the others' were read on the same window before)
    [ -f $E/${N}_layers_$s/sparsity.json ] || $A sparsity $MODEL adapter=$F/adapter window=$L text=$HELD=code \
      scorer=$s policy=topk:0.1 out=$E/${N}_layers_$s; keep
  done ;;
output)  # the output oracle (blocks ranked by how far dropping them moves each query's output) beside the mass
  # oracle and XAttention, per domain at 32k: is there room above the mass map for a value-aware target?
  setup
  E=$RUN/eval_best && mkdir -p $E  # beside the vertical stage's folders, in one archive
  for d in code docs prose; do
    [ -f $E/output_$d/ppl.json ] || $A ppl $MODEL window=$L prefix=$((L / 32)) windows=1 text=$HELD=$d \
      scorers=dense,oracle,oracle_output,xattention policies=[topk:0.05,topk:0.1,topk:0.2] out=$E/output_$d; keep
  done ;;
ruler)
  setup
  R="$A ruler $MODEL adapter=$ADAPTER lengths=[${SHORT:-16384},$L] samples=${SAMPLES:-3} haystack=$HELD=prose"
  [ -f $E/ruler/ruler.json ] || $R scorers=dense,gate,xattention,flexprefill,vertical_slash \
    policies=[topk:0.1] out=$E/ruler; keep
  [ -f $E/ruler_oracle/ruler.json ] || $R scorers=oracle policies=[topk:0.1] out=$E/ruler_oracle; keep
  [ -f $E/ruler_gate_topp/ruler.json ] || $R scorers=gate policies=[topp:density=0.1] \
    out=$E/ruler_gate_topp; keep ;;
*) echo "unknown stage $1"; exit 2 ;;
esac
