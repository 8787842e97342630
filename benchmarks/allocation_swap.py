"""Experiment (issue 15): is it the gates' ranking or their allocation across layers that loses to XAttention?

XAttention's shared threshold spends a different density in each layer (0.078-0.136 on SmolLM2 docs at d 0.1);
the gates' best rule, top-p calibrated per layer, spends 0.1 in every layer. Here the gates' top-p is calibrated
layer by layer to the densities another run reached (a ``seerflex eval sparsity`` JSON, e.g. XAttention at its
calibrated threshold), and the perplexity read on the same windows: if the gates then beat that run, their ranking
and mass estimates are the better ones and the layer allocation is what to learn.

    python benchmarks/allocation_swap.py --allocation sparsity.json --text corpus:DIR:split=heldout:domains=docs \
        --out allocation_swap.json [--calibration-text TEXT] [--density 0.1] [--scorer gate] [--compile dynamic]
"""

from __future__ import annotations

import argparse
import json
import math
import time

from seerflex.evaluation.calibration import allocation_targets, calibrate_per_layer, layer_density
from seerflex.evaluation.nll import mean_nll
from seerflex.evaluation.selection import achieved_density
from seerflex.policies import TopP
from seerflex.recipes.eval import SparsityArgs, load_seerflex_model, token_windows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--allocation", required=True,
                   help="seerflex eval sparsity (or eval budget) JSON whose per-layer densities to reach")
    p.add_argument("--text", required=True, help="evaluated text (its first window)")
    p.add_argument("--calibration-text", default=None,
                   help="text the per-layer top-p is fitted on (default: the evaluated window, as the CPU tables)")
    p.add_argument("--out", required=True)
    p.add_argument("--density", type=float, default=None,
                   help="scale the allocation to this average density (default: as recorded)")
    p.add_argument("--scorer", default="gate")
    p.add_argument("--adapter", default="seerflex/adapters/smollm2-mix")
    p.add_argument("--compile", default="dynamic")
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--prefix", type=int, default=1024)
    args = p.parse_args()
    reference = json.load(open(args.allocation))
    targets = allocation_targets(args.allocation, args.density)
    model, tokenizer = load_seerflex_model(SparsityArgs(model="smollm2", adapter=args.adapter, dtype="float32",
                                                        compile=args.compile))
    windows = token_windows(tokenizer, args.text, args.window, 1)
    fit_on = windows if args.calibration_text is None else token_windows(tokenizer, args.calibration_text, args.window, 1)
    start = time.perf_counter()
    policies, _ = calibrate_per_layer(model, args.scorer, TopP(0.9), targets, fit_on)
    nll, records = mean_nll(model, args.scorer, policies, windows, args.prefix)
    reached, density = layer_density(records), achieved_density(records)
    ppl, dense = math.exp(nll), math.exp(mean_nll(model, "dense", None, windows, args.prefix)[0])
    result = {"allocation_from": args.allocation, "reference_policy": reference["args"].get("policy"),
              "reference_scorer": reference["args"].get("scorer"), "scorer": args.scorer, "text": args.text,
              "calibration_text": args.calibration_text or args.text,
              "window": args.window, "prefix": args.prefix, "ppl": ppl, "dense_ppl": dense,
              "rise": ppl / dense - 1, "density": density, "seconds": time.perf_counter() - start,
              "layers": [{"layer": i, "target": targets[i], "density": reached.get(i), "p": policies[i].p}
                         for i in sorted(targets)]}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.scorer} top-p at {result['reference_scorer']}'s allocation: ppl {ppl:.3f} (dense {dense:.3f}, "
          f"{100 * result['rise']:+.1f}%), density {density:.4f}")


if __name__ == "__main__":
    main()
