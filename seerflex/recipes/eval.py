"""``seerflex eval {ppl,passkey}``: quality of block selections, learned gates next to baselines.

    seerflex eval ppl --model smollm2 --adapter runs/distill_smollm2/adapter --text austen:Emma \\
        --window 8192 --prefix 1024 --windows 3 --scorers dense,gate,recency,pooled,oracle \\
        --policies topk:0.05,topk:0.1,topk:0.2 --out results/ppl
    seerflex eval passkey --model smollm2 --adapter ... --lengths 4096 8192 --depths 0.1 0.5 0.9 --trials 4

Each writes ``<out>/<command>.json`` and a PNG, and prints a rich table.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import torch

from seerflex.config import SeerFlexConfig
from seerflex.evaluation import plots
from seerflex.evaluation.calibration import calibrate
from seerflex.evaluation.passkey import passkey_prompt, passkey_trial
from seerflex.evaluation.ppl import evaluate_ppl, windows
from seerflex.evaluation.selection import achieved_density, parse_policy, selection
from seerflex.recipes.common import console, environment, print_table, write_json


def load_seerflex_model(model: str, adapter: str | None, device: str, dtype: torch.dtype, **config: Any) -> tuple[Any, Any]:
    """(SeerFlexModel, tokenizer): the learned adapter if given, else untrained gates (baselines only)."""
    from seerflex.distill.recipe import load_model
    from seerflex.hf.model import SeerFlexModel, get_seerflex_model

    base, tokenizer = load_model(model, dtype)
    base = base.to(device).eval()
    if adapter:
        wrapped = SeerFlexModel.from_pretrained(base, adapter)
        for layer_cfg in wrapped.peft_config.values():
            for key, value in config.items():
                setattr(layer_cfg, key, value)
    else:
        console.log("[yellow]no --adapter: the 'gate' scorer uses untrained gates; baselines are unaffected[/yellow]")
        wrapped = get_seerflex_model(base, SeerFlexConfig(**config))
    return wrapped.to(device), tokenizer


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="'smollm2' (bundled) or a transformers folder / hub id")
    p.add_argument("--adapter", help="seerflex adapter folder (learned gates)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--compile", default="auto")
    p.add_argument("--out", default="results/eval")


def ppl_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="seerflex eval ppl")
    common_args(p)
    p.add_argument("--text", default="austen:Emma", help="austen[:Title], a text/json/parquet file or a hub dataset")
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--scorers", default="dense,gate,recency,pooled,oracle")
    p.add_argument("--policies", default="topk:0.05,topk:0.1,topk:0.2,topk:0.5")
    args = p.parse_args(argv)
    from seerflex.distill.data import load_texts

    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    ids = torch.tensor(tokenizer("\n".join(load_texts(args.text)))["input_ids"])
    rows = evaluate_ppl(model, windows(ids, args.window, args.windows), args.prefix, args.scorers.split(","),
                        args.policies.split(","))
    out = Path(args.out)
    write_json(out / "ppl.json", {"environment": environment(), "args": vars(args), "rows": rows})
    plots.density_curve(rows, "ppl", out / "ppl_vs_density.png", f"perplexity, {args.text}, {args.window} tokens")
    print_table(f"perplexity ({args.text}, window {args.window}, loss after {args.prefix})",
                ["scorer", "policy", "ppl", "density", "seconds"], [[r[c] for c in ("scorer", "policy", "ppl", "density", "seconds")] for r in rows])
    return 0


def passkey_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="seerflex eval passkey")
    common_args(p)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--trials", type=int, default=4, help="per (length, depth)")
    p.add_argument("--scorers", default="dense,gate,recency,pooled")
    p.add_argument("--policies", default="topk:0.1")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    runs = [("dense", None)] if "dense" in args.scorers.split(",") else []
    runs += [(s, spec) for s in args.scorers.split(",") if s != "dense" for spec in args.policies.split(",")]
    rows, out = [], Path(args.out)
    for scorer, spec in runs:
        grid = []
        policy, target = (None, None) if spec is None else parse_policy(spec)
        if target is not None:  # calibrate on a prompt of the same kind (its key is not one of the trials')
            probe = passkey_prompt(tokenizer, args.lengths[0], 0.5, 12345)
            policy, _ = calibrate(model, scorer, policy, target, [probe])
        with selection(model, scorer, policy) as records:
            for length in args.lengths:
                rng = random.Random(args.seed + length)  # the same keys for every scorer
                grid.append([sum(passkey_trial(model, tokenizer, length, d, rng) for _ in range(args.trials)) / args.trials
                             for d in args.depths])
            density = achieved_density(list(records))
        name = scorer if spec is None else f"{scorer} {spec}"
        flat = [x for row in grid for x in row]
        rows.append({"scorer": scorer, "policy": spec or "-", "calibrated": None if target is None else policy.to_dict(),
                     "accuracy": sum(flat) / len(flat),
                     "density": 1.0 if density is None else density, "grid": grid})
        plots.heatmap(grid, [str(n) for n in args.lengths], [f"{d:.1f}" for d in args.depths],
                      out / f"passkey_{name.replace(' ', '_').replace(':', '-')}.png", f"passkey accuracy: {name}",
                      "depth", "length")
    write_json(out / "passkey.json", {"environment": environment(), "args": vars(args), "rows": rows})
    print_table("passkey retrieval", ["scorer", "policy", "accuracy", "density"],
                [[r[c] for c in ("scorer", "policy", "accuracy", "density")] for r in rows])
    return 0


COMMANDS = {"ppl": ppl_main, "passkey": passkey_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        console.print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])
