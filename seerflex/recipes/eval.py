"""``seerflex eval {ppl,passkey,needle,sparsity}``: quality of block selections, learned gates next to baselines.

    seerflex eval ppl --model smollm2 --adapter runs/distill_smollm2/adapter --text austen:Emma \\
        --window 8192 --prefix 1024 --windows 3 --scorers dense,gate,recency,pooled,oracle \\
        --policies topk:0.05,topk:0.1,topk:0.2 --out results/ppl
    seerflex eval passkey --model smollm2 --adapter ... --lengths 4096 8192 --depths 0.1 0.5 0.9 --trials 4
    seerflex eval needle  (same options as passkey; a planted fact instead of a number)
    seerflex eval sparsity --adapter ... --policy topk:0.1 --layer 10 --head 3
    seerflex eval budget --adapter ... --density 0.1 --budget-text austen:Persuasion --save-adapter DIR

Policy specs (``--policies``): ``topk:0.1``, ``threshold:2e-3``, ``topp:0.9``, ``topp:density=0.1``
(calibrated), ``budget:0.1`` (per-layer densities from layer sensitivity on ``--budget-text``),
``adapter`` (the adapter's own, possibly per-layer, policies).

Each writes ``<out>/<command>.json`` and a PNG, and prints a rich table.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import torch

from seerflex.config import SeerFlexConfig
from seerflex.distill.data import load_texts
from seerflex.evaluation import plots
from seerflex.evaluation.layer_budget import allocate, layer_sensitivity, topk_like
from seerflex.evaluation.nll import windows
from seerflex.evaluation.passkey import needle_trial, passkey_prompt, passkey_trial
from seerflex.evaluation.policy_specs import BUDGET, resolve_policy
from seerflex.evaluation.ppl import evaluate_ppl
from seerflex.evaluation.selection import achieved_density, parse_policy, runs, selection
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


def budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget-text", default="austen:Persuasion",
                   help="calibration text for budget: specs (keep it apart from the evaluation text)")
    p.add_argument("--budget-windows", type=int, default=1)
    p.add_argument("--budget-window", type=int, default=8192)
    p.add_argument("--budget-prefix", type=int, default=1024)


def token_windows(tokenizer: Any, text: str, length: int, count: int) -> list[torch.Tensor]:
    return windows(torch.tensor(tokenizer("\n".join(load_texts(text)))["input_ids"]), length, count)


def budget_windows(args: argparse.Namespace, tokenizer: Any, specs: list[str]) -> list[torch.Tensor] | None:
    """Calibration windows, loaded only when a spec asks for a budget."""
    if not any(s.startswith(BUDGET) for s in specs):
        return None
    return token_windows(tokenizer, args.budget_text, args.budget_window, args.budget_windows)


def ppl_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="seerflex eval ppl")
    common_args(p)
    p.add_argument("--text", default="austen:Emma", help="austen[:Title], a text/json/parquet file or a hub dataset")
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--scorers", default="dense,gate,recency,pooled,oracle")
    p.add_argument("--policies", default="topk:0.05,topk:0.1,topk:0.2,topk:0.5")
    budget_args(p)
    args = p.parse_args(argv)
    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    specs = args.policies.split(",")
    rows = evaluate_ppl(model, token_windows(tokenizer, args.text, args.window, args.windows), args.prefix,
                        args.scorers.split(","), specs, budget_windows(args, tokenizer, specs))
    out = Path(args.out)
    write_json(out / "ppl.json", {"environment": environment(), "args": vars(args), "rows": rows})
    plots.density_curve(rows, "ppl", out / "ppl_vs_density.png", f"perplexity, {args.text}, {args.window} tokens")
    print_table(f"perplexity ({args.text}, window {args.window}, loss after {args.prefix})",
                ["scorer", "policy", "ppl", "density", "seconds"], [[r[c] for c in ("scorer", "policy", "ppl", "density", "seconds")] for r in rows])
    return 0


def passkey_main(argv: list[str], kind: str = "passkey") -> int:
    p = argparse.ArgumentParser(prog=f"seerflex eval {kind}")
    common_args(p)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--trials", type=int, default=4, help="per (length, depth)")
    p.add_argument("--scorers", default="dense,gate,recency,pooled")
    p.add_argument("--policies", default="topk:0.1")
    p.add_argument("--seed", type=int, default=0)
    budget_args(p)
    args = p.parse_args(argv)
    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    rows, out = [], Path(args.out)
    trial = passkey_trial if kind == "passkey" else needle_trial
    specs = args.policies.split(",")
    probe = [passkey_prompt(tokenizer, args.lengths[0], 0.5, 12345)]  # density calibration; not a trial's key
    calibration = budget_windows(args, tokenizer, specs)
    for scorer, spec in runs(args.scorers.split(","), specs):
        grid = []
        policy, chosen = resolve_policy(model, scorer, spec, probe, calibration, args.budget_prefix)
        with selection(model, scorer, policy) as records:
            for length in args.lengths:
                rng = random.Random(args.seed + length)  # the same keys for every scorer
                grid.append([sum(trial(model, tokenizer, length, d, rng) for _ in range(args.trials)) / args.trials
                             for d in args.depths])
            density = achieved_density(list(records))
        name = scorer if spec is None else f"{scorer} {spec}"
        flat = [x for row in grid for x in row]
        rows.append({"scorer": scorer, "policy": spec or "-", "calibrated": chosen, "accuracy": sum(flat) / len(flat),
                     "density": 1.0 if density is None else density, "grid": grid})
        plots.heatmap(grid, [str(n) for n in args.lengths], [f"{d:.1f}" for d in args.depths],
                      out / f"{kind}_{name.replace(' ', '_').replace(':', '-').replace('=', '')}.png", f"{kind} accuracy: {name}",
                      "depth", "length")
    write_json(out / f"{kind}.json", {"environment": environment(), "args": vars(args), "rows": rows})
    plots.density_curve(rows, "accuracy", out / f"{kind}_vs_density.png",
                        f"{kind} accuracy, lengths {' '.join(map(str, args.lengths))}")
    print_table(f"{kind} retrieval", ["scorer", "policy", "accuracy", "density"],
                [[r[c] for c in ("scorer", "policy", "accuracy", "density")] for r in rows])
    return 0


def sparsity_main(argv: list[str]) -> int:
    """Per-layer/head achieved density and gate recall on one window; block maps of one layer/head."""
    p = argparse.ArgumentParser(prog="seerflex eval sparsity")
    common_args(p)
    p.add_argument("--text", default="austen:Emma")
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--policy", default="topk:0.1")
    p.add_argument("--target", default="mass", choices=["mass", "max"], help="ground truth recall is measured on")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--head", type=int, default=0)
    args = p.parse_args(argv)
    from seerflex.distill.collector import Collector, collecting
    from seerflex.hf.families import hf_model_of

    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    policy, target = parse_policy(args.policy)
    if target is not None:
        raise ValueError("eval sparsity takes an explicit policy (calibrate with eval ppl)")
    model.set_policy(policy)
    ids = token_windows(tokenizer, args.text, args.window, 1)[0]
    collector = Collector(target=args.target, skip_first_rows=0.0, per_head=True)
    with torch.no_grad(), collecting(hf_model_of(model.base_model), collector):
        model(input_ids=ids[None].to(model.device), use_cache=False, logits_to_keep=1)
    layers = sorted(collector.head_stats)
    density = [collector.head_stats[i][0].tolist() for i in layers]
    recall = [collector.head_stats[i][1].tolist() for i in layers]
    out = Path(args.out)
    heads = [str(h) for h in range(len(density[0]))]
    plots.heatmap(density, [str(i) for i in layers], heads, out / "density.png", f"achieved density, {args.policy}",
                  "head", "layer")
    plots.heatmap(recall, [str(i) for i in layers], heads, out / "recall.png",
                  f"gate recall ({args.target} covered), {args.policy}", "head", "layer")
    gate_map, truth = collector.maps[args.layer]
    plots.block_maps(gate_map[args.head].tolist(), truth[args.head].tolist(), out / "block_maps.png",
                     f"layer {args.layer}, head {args.head}")
    rows = [{"layer": i, "density": sum(d) / len(d), "recall": sum(r) / len(r), "density_per_head": d,
             "recall_per_head": r} for i, d, r in zip(layers, density, recall)]
    write_json(out / "sparsity.json", {"environment": environment(), "args": vars(args), "rows": rows})
    print_table(f"sparsity per layer ({args.policy})", ["layer", "density", "recall"],
                [[r["layer"], r["density"], r["recall"]] for r in rows])
    return 0


def budget_main(argv: list[str]) -> int:
    """Per-layer densities for an average density, from each layer's measured loss rise."""
    p = argparse.ArgumentParser(prog="seerflex eval budget")
    common_args(p)
    budget_args(p)
    p.add_argument("--scorer", default="gate", help="what ranks the blocks: gate, pooled, oracle, recency")
    p.add_argument("--density", type=float, default=0.1, help="average density over the layers")
    p.add_argument("--policy", default="topk:0.1", help="top-k spec whose sink/local/bounds every layer keeps")
    p.add_argument("--save-adapter", help="write the adapter with these per-layer policies (scorer gate only)")
    args = p.parse_args(argv)
    if args.save_adapter and args.scorer != "gate":
        raise ValueError("--save-adapter stores gates with their budget: use --scorer gate")
    model, tokenizer = load_seerflex_model(args.model, args.adapter, args.device, getattr(torch, args.dtype),
                                           dense_below=0, compile=args.compile)
    base, _ = parse_policy(args.policy)
    calibration = token_windows(tokenizer, args.budget_text, args.budget_window, args.budget_windows)
    sens = layer_sensitivity(model, args.scorer, calibration, args.budget_prefix, base=base)
    picks = allocate(sens, args.density)
    out = Path(args.out)
    rows = [{"layer": layer, "density": sens.candidates[ci], "achieved": float(sens.density[li, ci]),
             "loss_rise": float(sens.loss_rise[li, ci]), "loss_rise_per_candidate": sens.loss_rise[li].tolist()}
            for li, (layer, ci) in enumerate(zip(sens.layers, picks))]
    predicted = sum(r["loss_rise"] for r in rows)  # additive: measured joint losses were higher (RESULTS.md)
    write_json(out / "budget.json", {"environment": environment(), "args": vars(args), "candidates": sens.candidates,
                                     "predicted_loss_rise": predicted, "rows": rows})
    rise = sens.loss_rise.clamp(min=0)
    plots.heatmap(rise.tolist(), [str(i) for i in sens.layers], [str(d) for d in sens.candidates],
                  out / "layer_sensitivity.png", f"loss rise, one layer sparse ({args.scorer})",
                  "top-k density", "layer", vmax=max(float(rise.max()), 1e-6), fmt=".3f")
    print_table(f"per-layer budget, average density {args.density} ({args.scorer}); summed single-layer loss "
                f"rise {predicted:.4f} nats/token (joint runs measured higher: layers compound)",
                ["layer", "density", "achieved", "loss_rise"], [[r[c] for c in ("layer", "density", "achieved", "loss_rise")]
                                                               for r in rows])
    if args.save_adapter:
        for r in rows:
            model.set_policy(topk_like(base, r["density"]), layers=[r["layer"]])
        model.save_pretrained(args.save_adapter)
        console.print(f"saved {args.save_adapter} (run it with --policies adapter)")
    return 0


COMMANDS = {"budget": budget_main, "ppl": ppl_main, "passkey": passkey_main, "needle": lambda argv: passkey_main(argv, "needle"),
            "sparsity": sparsity_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        console.print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])
