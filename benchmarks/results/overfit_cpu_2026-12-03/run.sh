# Do the gates overfit their corpus? Free recall at top-k 0.1 of the gates, XAttention and the oracle on the first 8k
# window of the train split and of the held-out split, per domain (CPU, 2026-12-03). The gates: the 500-step free-KL
# ones bundled at 99a01a8. The first train window is the same in the first corpus and the widened one (its new
# sources come after the others). From the repository root:
set -euo pipefail
G=/tmp/gates_99a01a8 && mkdir -p $G /tmp/ovf
for f in adapter_config.json adapter_model.safetensors; do git show 99a01a8:seerflex/adapters/smollm2-mix/$f > $G/$f; done
C=~/.cache/seerflex/corpus
for d in docs code; do for sp in train heldout; do for s in gate oracle xattention; do
  o=/tmp/ovf/${d}_${sp}_$s
  [ -f $o/sparsity.json ] || .venv/bin/python -m seerflex.cli eval sparsity adapter=$G \
    text=corpus:$C:split=$sp:domains=$d window=8192 scorer=$s policy=topk:0.1 out=$o > $o.log 2>&1
done; done; done
