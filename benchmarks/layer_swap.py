"""Which layers carry the perplexity gap between the learned gates and another scorer (the oracle by default)?

    python benchmarks/layer_swap.py adapter=seerflex/adapters/smollm2-mix text=corpus:DIR:split=heldout:domains=code \
        window=8192 prefix=1024 policy=topk:0.1 swap=oracle sets="3-10;11-29;17-20" out=results/layer_swap

Perplexity with the gates everywhere, the swap scorer everywhere, and the gates with the swap scorer in each set of
layers only (``18:6,7``: heads 6 and 7 of layer 18), all under one policy (top-k per head row: equal density, and
logits of different scales may share a layer). Where a set closes most of the gap, the
gates' misses there are the ones the loss feels: block-mass recall alone did not say so (RESULTS.md, per-layer recall).
The swapped layers get their own runtime holding the swap scorer, an experiment's device, not an API.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from seerflex.attention import SeerFlexAttention
from seerflex.evaluation.nll import window_nll
from seerflex.evaluation.policy_specs import parse_policy
from seerflex.recipes.common import environment, print_table, write_json
from seerflex.recipes.config import knob, parse_recipe
from seerflex.recipes.eval import EvalArgs, load_seerflex_model, token_windows
from seerflex.scorer import BlockScorer, ScorerInputs
from seerflex.scorers import make_scorer


@dataclass
class SwapArgs(EvalArgs):
    text: str = knob("austen:Emma", "evaluated text")
    window: int = knob(8192, "tokens per window")
    prefix: int = knob(1024, "tokens before the loss counts")
    windows: int = knob(1, "windows")
    policy: str = knob("topk:0.1", "policy spec (no calibration)")
    swap: str = knob("oracle", "the scorer swapped in")
    sets: str = knob("3-10;11-29", "layer sets, ';'-separated, each 'a-b', 'a,b,c' or 'layer:head,head' or such "
                                   "parts joined by '+' (e.g. 9:9+11:1,9+16)")


def layer_set(spec: str) -> dict[int, set[int] | None]:
    """layer -> heads (None: every head) of one set spec: '+'-joined parts, each 'a-b', 'a,b,c' or 'layer:head,head'."""
    chosen: dict[int, set[int] | None] = {}
    for part in spec.split("+"):
        try:
            if ":" in part:
                layer, heads = part.split(":")
                chosen[int(layer)] = {int(h) for h in heads.split(",")}
            elif "-" in part:
                low, high = part.split("-")
                chosen.update(dict.fromkeys(range(int(low), int(high) + 1)))
            else:
                chosen.update(dict.fromkeys(int(x) for x in part.split(",")))
        except ValueError:
            raise ValueError(f"bad layer set {spec!r}: use 'a-b', 'a,b,c' or 'layer:head,head', joined by '+'") from None
    return chosen


class HeadMix:
    """The layer's learned gate, with ``swap``'s scores in ``heads``."""

    def __init__(self, gate: torch.nn.Module, swap: BlockScorer, heads: set[int]) -> None:
        self.gate, self.swap, self.heads = gate, swap, sorted(heads)

    def score_blocks(self, x: ScorerInputs) -> torch.Tensor:
        scores = self.gate(x.gate_q, x.gate_k, x.layout, compile=x.compile).float().clone()
        scores[:, self.heads] = self.swap.score_blocks(x)[:, self.heads]
        return scores


def main(argv: list[str]) -> int:
    args = parse_recipe(SwapArgs, argv, prog="layer_swap.py")
    if args is None:
        return 0
    policy, target = parse_policy(args.policy)
    if target is not None:
        raise ValueError("layer_swap takes an explicit policy")
    swap, specs = make_scorer(args.swap), [(s, layer_set(s)) for s in args.sets.split(";")]  # bad input: before loading
    model, tokenizer = load_seerflex_model(args)
    model.set_policy(policy)
    model.set_scorer(None)
    windows = token_windows(tokenizer, args.text, args.window, args.windows)
    layers = [m for m in model.modules() if isinstance(m, SeerFlexAttention)]
    shared = layers[0].runtime
    swapped_runtime = dataclasses.replace(shared, scorer=swap)
    every, num_heads = {m.layer_idx for m in layers}, layers[0].gate.num_heads
    for spec, chosen in specs:
        if not set(chosen) <= every or any(h is not None and not h <= set(range(num_heads)) for h in chosen.values()):
            raise ValueError(f"layer set {spec!r} names layers or heads the model lacks (gated layers "
                             f"{min(every)}-{max(every)}, heads 0-{num_heads - 1})")
    rows = []
    for name, chosen in [("gates", {}), (args.swap, dict.fromkeys(every))] + specs:
        for m in layers:
            heads = chosen.get(m.layer_idx)
            m.runtime = shared if m.layer_idx not in chosen else swapped_runtime if heads is None else \
                dataclasses.replace(shared, scorer=HeadMix(m.gate, swap, heads))
        nll = [window_nll(model, w, args.prefix) for w in windows]
        ppl = math.exp(sum(n for n, _ in nll) / sum(c for _, c in nll))
        rows.append({"swapped": name, "layers": sorted(chosen),
                     "heads": {str(k): sorted(v) for k, v in chosen.items() if v is not None} or None, "ppl": ppl})
    for m in layers:
        m.runtime = shared
    gates, full = rows[0]["ppl"], rows[1]["ppl"]
    for r in rows:  # the share of the gates-to-swap gap that swapping this set closes
        r["gap_closed"] = (gates - r["ppl"]) / (gates - full) if gates != full else float("nan")
    write_json(Path(args.out) / "layer_swap.json", {"environment": environment(), "args": asdict(args), "rows": rows})
    print_table(f"gates with {args.swap} in some layers ({args.policy}, {args.window} tokens)",
                ["swapped", "ppl", "gap_closed"], [[r["swapped"], r["ppl"], r["gap_closed"]] for r in rows])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ValueError as err:  # bad input: one line, exit code 2
        print(f"layer_swap.py: {err}", file=sys.stderr)
        sys.exit(2)
