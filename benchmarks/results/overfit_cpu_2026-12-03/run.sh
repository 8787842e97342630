cd /work/main
C=~/.cache/seerflex/corpus
for d in docs code; do for sp in train heldout; do for s in gate oracle xattention; do
  o=/tmp/ovf/${d}_${sp}_$s
  [ -f $o/sparsity.json ] || .venv/bin/python -m seerflex.cli eval sparsity adapter=seerflex/adapters/smollm2-mix text=corpus:$C:split=$sp:domains=$d window=8192 scorer=$s policy=topk:0.1 out=$o > $o.log 2>&1
done; done; done
echo done > /tmp/ovf/DONE
