"""``seerflex eval {ppl,passkey,needle,ruler,sparsity,budget,calibrate}``: quality of block selections, learned gates next to baselines.

    seerflex eval ppl [CONFIG.yaml] model=smollm2 adapter=runs/distill_smollm2/adapter text=austen:Emma \
        window=8192 prefix=1024 windows=3 scorers=dense,gate,recency,pooled,oracle \
        policies=topk:0.05,topk:0.1,topk:0.2 out=results/ppl
    seerflex eval passkey adapter=... lengths=[4096,8192] depths=[0.1,0.5,0.9] trials=4
    seerflex eval needle  (same keys as passkey; a planted fact instead of a number)
    seerflex eval ruler adapter=... lengths=[4096,8192,16384] samples=4 haystack=corpus:DIR:split=heldout:domains=prose
    seerflex eval sparsity adapter=... policy=topk:0.1 layer=10 head=3
    seerflex eval budget adapter=... density=0.1 budget_text=austen:Persuasion save_adapter=DIR
    seerflex eval calibrate adapter=... policy=topp:density=0.1:per_layer=true budget_text=... save_adapter=DIR
        [allocation=sparsity.json]   # each layer to another run's density (e.g. XAttention's), scaled to 0.1

``--key value`` works as ``key=value`` (``--lengths 4096 8192``); ``seerflex eval ppl --help`` lists
the keys. Policy specs: ``topk:0.1``, ``threshold:2e-3``, ``topp:0.9``, ``topp:density=0.1``
(calibrated; ``:per_layer=true`` in every layer), ``budget:0.1`` (per-layer densities from layer sensitivity on ``budget_text``),
``adapter`` (the adapter's own, possibly per-layer, policies).

Each writes ``<out>/<command>.json`` and a PNG, and prints a rich table.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from seerflex.assets import load_model
from seerflex.config import SeerFlexConfig
from seerflex.console import console, warn
from seerflex.distill.collector import Collector, collecting
from seerflex.evaluation import plots, ruler
from seerflex.evaluation.calibration import allocation_targets, layer_density, sparsity_records
from seerflex.evaluation.layer_budget import allocate, layer_sensitivity, topk_like
from seerflex.evaluation.nll import windows
from seerflex.evaluation.passkey import answer, needle_trial, passkey_prompt, passkey_trial
from seerflex.evaluation.policy_specs import BUDGET, parse_policy, resolve_policy, spec_policy
from seerflex.evaluation.ppl import evaluate_ppl
from seerflex.evaluation.selection import achieved_density, runs, selection
from seerflex.hf.families import hf_model_of
from seerflex.policies import MAIN_FIELD, Policy, spec_fields
from seerflex.recipes.common import environment, print_table, write_json
from seerflex.recipes.config import knob, parse_recipe
from seerflex.runtime import RuntimeOptions
from seerflex.texts import load_texts

GPU = torch.cuda.is_available()


@dataclass
class EvalArgs:
    """What every eval command loads."""

    model: str = knob("smollm2", "smollm2, qwen2.5-coder-0.5b (offline, seerflex.assets) or a transformers folder / hub id")
    adapter: str | None = knob(None, "seerflex adapter folder (learned gates); none: untrained gates")
    device: str = knob("cuda" if GPU else "cpu", "torch device")
    dtype: str = knob("bfloat16" if GPU else "float32", "model dtype")
    compile: str = knob("auto", "runtime compile mode: auto, dynamic, static, eager")
    block_shape: list[int] | None = knob(None, "[query block, key block] to run the adapter's gates on (default: "
                                               "the shape they were trained on), e.g. [128,64]")
    out: str = knob("results/eval", "folder for the JSON results and plots")


@dataclass
class BudgetArgs(EvalArgs):
    budget_text: str = knob("austen:Persuasion", "calibration text of budget: specs (not the evaluated text)")
    budget_windows: int = knob(1, "calibration windows")
    budget_window: int = knob(8192, "tokens per calibration window")
    budget_prefix: int = knob(1024, "loss counted after this many tokens of a calibration window")


@dataclass
class PplArgs(BudgetArgs):
    """Perplexity over long windows for every scorer x policy, with achieved density."""

    text: str = knob("austen:Emma", "evaluated text: austen[:Title], a text/json/parquet file or a hub dataset")
    window: int = knob(8192, "tokens per window")
    prefix: int = knob(1024, "loss counted after this many tokens of each window")
    windows: int = knob(3, "windows, evenly spaced through the text")
    scorers: list[str] = knob(["dense", "gate", "recency", "pooled", "oracle"],
                              "dense, gate or any seerflex.scorers name (xattention, oracle_max, ...)")
    policies: list[str] = knob(["topk:0.05", "topk:0.1", "topk:0.2", "topk:0.5"],
                               "topk:0.1, threshold:2e-3, topp:0.9, topp:density=0.1 (calibrated), budget:0.1, adapter")


@dataclass
class PasskeyArgs(BudgetArgs):
    """Retrieval accuracy of a planted passkey (or fact) per length and depth."""

    lengths: list[int] = knob([8192], "prompt lengths in tokens")
    depths: list[float] = knob([0.1, 0.3, 0.5, 0.7, 0.9], "where the key sits (0 = start, 1 = end)")
    trials: int = knob(4, "trials per (length, depth)")
    scorers: list[str] = knob(["dense", "gate", "recency", "pooled"], "dense, gate or any seerflex.scorers name")
    policies: list[str] = knob(["topk:0.1"], "policy specs, as for eval ppl")
    seed: int = knob(0, "seed of the keys (the same keys for every scorer)")


@dataclass
class RulerArgs(BudgetArgs):
    """RULER-style long-context tasks (needles, variable tracking, word extraction) per length."""

    lengths: list[int] = knob([4096, 8192], "prompt + answer tokens (RULER's count): up to the model's context; "
                                            "at the context the prompt leaves new_tokens free")
    tasks: list[str] = knob(list(ruler.TASKS), "tasks (seerflex.evaluation.ruler.TASKS)")
    samples: int = knob(4, "prompts per (task, length)")
    haystack: str = knob("austen:Emma", "filler text of the needle tasks: any text source, e.g. corpus:DIR:split=heldout")
    scorers: list[str] = knob(["dense", "gate", "xattention"], "dense, gate or any scorer")
    policies: list[str] = knob(["topk:0.1"], "policy specs, as for eval ppl")
    new_tokens: int = knob(48, "tokens generated per answer")
    seed: int = knob(0, "seed of the prompts (the same prompts for every scorer)")


@dataclass
class SparsityArgs(EvalArgs):
    """Per-layer/head achieved density and recall on one window; block maps of one layer/head."""

    scorer: str = knob("gate", "what ranks the blocks: gate or a training-free scorer (xattention, pooled, ...)")
    text: str = knob("austen:Emma", "evaluated text")
    window: int = knob(8192, "tokens in the window")
    policy: str = knob("topk:0.1", "policy spec (no calibration)")
    target: str = knob("mass", "ground truth recall is measured on: mass or max")
    layer: int = knob(0, "layer of the block-map plot")
    head: int = knob(0, "head of the block-map plot")


@dataclass
class CalibrateArgs(BudgetArgs):
    """Calibrate a threshold / top-p policy to a density on calibration text (``budget_text``) and save the gates
    with it: ``:per_layer=true`` gives every layer its own parameter."""

    scorer: str = knob("gate", "what ranks the blocks: gate or a training-free scorer")
    policy: str = knob("topp:density=0.1:per_layer=true", "threshold / top-p spec with density=...")
    save_adapter: str | None = knob(None, "write the adapter with the calibrated policies (scorer gate only)")
    allocation: str | None = knob(None, "per-layer densities to calibrate each layer to, from a `seerflex eval "
                                        "sparsity` JSON (scaled to the spec's density; needs :per_layer=true)")


@dataclass
class LayerBudgetArgs(BudgetArgs):
    """Per-layer densities for an average density, from each layer's measured loss rise."""

    scorer: str = knob("gate", "what ranks the blocks: gate or any seerflex.scorers name (save_adapter needs gate)")
    density: float = knob(0.1, "average density over the layers")
    policy: str = knob("topk:0.1", "top-k spec whose sink/local/bounds every layer keeps")
    save_adapter: str | None = knob(None, "write the adapter with these per-layer policies (scorer gate only)")


def load_seerflex_model(args: EvalArgs) -> tuple[Any, Any]:
    """(SeerFlexModel, tokenizer): the learned adapter if given, else untrained gates (baselines only).
    Every prefill runs sparse (``dense_below=0``): short evaluation windows count too."""
    from seerflex.hf.model import SeerFlexModel, get_seerflex_model

    runtime = RuntimeOptions(compile=args.compile, dense_below=0)
    shape = None if args.block_shape is None else tuple(args.block_shape)
    if shape is not None:  # a bad shape fails before the model loads
        if len(shape) != 2:
            raise ValueError(f"block_shape must be [query block, key block], got {list(shape)}")
        SeerFlexConfig(q_block_size=shape[0], block_size=shape[1])
    with console.status(f"loading {args.model} ({args.dtype}, {args.device})"):
        base, tokenizer = load_model(args.model, getattr(torch, args.dtype))
        base = base.to(args.device).eval()
    if args.adapter:
        wrapped = SeerFlexModel.from_pretrained(base, args.adapter, runtime=runtime, block_shape=shape)
    else:
        warn("no adapter: the 'gate' scorer uses untrained gates; baselines are unaffected")
        blocks = {} if shape is None else {"q_block_size": shape[0], "block_size": shape[1]}
        wrapped = get_seerflex_model(base, SeerFlexConfig(**blocks), runtime=runtime)
    scorers = getattr(args, "scorers", None) or [getattr(args, "scorer", "gate")]
    if "gate" in scorers:  # gates distilled with kl_blocks=free refuse fewer always-on blocks: before any run, not after
        config = wrapped.peft_config[wrapped.active_adapter]
        for spec in getattr(args, "policies", None) or [getattr(args, "policy", "adapter")]:
            if spec != "adapter":
                config.check_policy(spec_policy(spec))
    return wrapped.to(args.device), tokenizer


def token_windows(tokenizer: Any, text: str, length: int, count: int) -> list[torch.Tensor]:
    return windows(torch.tensor(tokenizer("\n".join(load_texts(text)))["input_ids"]), length, count)


def budget_windows(args: BudgetArgs, tokenizer: Any, specs: list[str]) -> list[torch.Tensor] | None:
    """Calibration windows, loaded only when a spec asks for a budget."""
    if not any(s.startswith(BUDGET) for s in specs):
        return None
    return token_windows(tokenizer, args.budget_text, args.budget_window, args.budget_windows)


def check_sweep(scorers: list[str], specs: list[str]) -> None:
    """Every scorer exists and every policy spec parses, before seconds of model loading."""
    runs(scorers, specs)
    for spec in specs:
        if spec != "adapter":
            spec_policy(spec)


def ppl_main(argv: list[str]) -> int:
    args = parse_recipe(PplArgs, argv, prog="seerflex eval ppl")
    if args is None:
        return 0
    check_sweep(args.scorers, args.policies)
    if not 0 <= args.prefix < args.window - 1:
        raise ValueError(f"prefix ({args.prefix}) must leave tokens to score in a window of {args.window}")
    model, tokenizer = load_seerflex_model(args)
    rows = evaluate_ppl(model, token_windows(tokenizer, args.text, args.window, args.windows), args.prefix,
                        args.scorers, args.policies, budget_windows(args, tokenizer, args.policies))
    out = Path(args.out)
    write_json(out / "ppl.json", {"environment": environment(), "args": asdict(args), "rows": rows})
    plots.density_curve(rows, "ppl", out / "ppl_vs_density.png", f"perplexity, {args.text}, {args.window} tokens")
    print_table(f"perplexity ({args.text}, window {args.window}, loss after {args.prefix})",
                ["scorer", "policy", "ppl", "density", "seconds"],
                [[r[c] for c in ("scorer", "policy", "ppl", "density", "seconds")] for r in rows])
    return 0


def passkey_main(argv: list[str], kind: str = "passkey") -> int:
    args = parse_recipe(PasskeyArgs, argv, prog=f"seerflex eval {kind}")
    if args is None:
        return 0
    check_sweep(args.scorers, args.policies)
    model, tokenizer = load_seerflex_model(args)
    rows, out = [], Path(args.out)
    trial = passkey_trial if kind == "passkey" else needle_trial
    specs = args.policies
    probe = [passkey_prompt(tokenizer, n, 0.5, 12345) for n in args.lengths]  # density calibration, every length
    calibration = budget_windows(args, tokenizer, specs)
    for scorer, spec in runs(args.scorers, specs):
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
    write_json(out / f"{kind}.json", {"environment": environment(), "args": asdict(args), "rows": rows})
    plots.density_curve(rows, "accuracy", out / f"{kind}_vs_density.png",
                        f"{kind} accuracy, lengths {' '.join(map(str, args.lengths))}")
    print_table(f"{kind} retrieval", ["scorer", "policy", "accuracy", "density"],
                [[r[c] for c in ("scorer", "policy", "accuracy", "density")] for r in rows])
    return 0


def ruler_main(argv: list[str]) -> int:
    args = parse_recipe(RulerArgs, argv, prog="seerflex eval ruler")
    if args is None:
        return 0
    check_sweep(args.scorers, args.policies)
    unknown = sorted(set(args.tasks) - set(ruler.TASKS))
    if unknown or args.samples < 1:
        raise ValueError(f"unknown RULER task(s) {unknown}; tasks: {', '.join(ruler.TASKS)}" if unknown
                         else f"samples must be >= 1, got {args.samples}")
    model, tokenizer = load_seerflex_model(args)
    sizes = prompt_sizes(args.lengths, args.new_tokens, getattr(model.config, "max_position_embeddings", None))
    haystack = "\n".join(load_texts(args.haystack))
    hay = tokenizer(haystack, add_special_tokens=False)["input_ids"]  # once, not per prompt
    prompts = {(task, n): [ruler.make_sample(task, tokenizer, sizes[n], hay,
                                             random.Random(f"{args.seed}/{task}/{n}/{i}"))
                           for i in range(args.samples)] for task in args.tasks for n in args.lengths}
    # densities are calibrated on unscored prompts, one per task and length: a mass rule's density moves with both
    # (Qwen's gates calibrated to 0.1 on one 16k prompt spent 0.080 over the suite)
    probe = [torch.tensor(tokenizer(ruler.make_sample(task, tokenizer, sizes[n], hay, random.Random(
        f"{args.seed}/{task}/{n}/probe")).prompt)["input_ids"]) for task in args.tasks for n in args.lengths]
    calibration = budget_windows(args, tokenizer, args.policies)
    rows, out = [], Path(args.out)
    for scorer, spec in runs(args.scorers, args.policies):
        policy, chosen = resolve_policy(model, scorer, spec, probe, calibration, args.budget_prefix)
        scores: dict[tuple[str, int], float] = {}
        with selection(model, scorer, policy) as records:
            for (task, n), samples in prompts.items():
                scores[(task, n)] = sum(ruler.score(answer(model, tokenizer, torch.tensor(
                    tokenizer(x.prompt)["input_ids"]), args.new_tokens), x.answers) for x in samples) / len(samples)
            density = achieved_density(list(records))
        by_length = {str(n): sum(scores[(t, n)] for t in args.tasks) / len(args.tasks) for n in args.lengths}
        rows.append({"scorer": scorer, "policy": spec or "-", "calibrated": chosen,
                     "density": 1.0 if density is None else density, "average": sum(by_length.values()) / len(by_length),
                     "by_length": by_length, "by_task": {f"{t}@{n}": v for (t, n), v in scores.items()}})
        console.log(f"{scorer} {spec or ''}: average {rows[-1]['average']:.3f}")
    write_json(out / "ruler.json", {"environment": environment(), "args": asdict(args), "rows": rows})
    plots.length_curve(rows, args.lengths, out / "ruler_vs_length.png", f"RULER-style average, {', '.join(args.tasks)}")
    print_table("RULER-style accuracy (average over tasks)", ["scorer", "policy", "density", "average",
                                                              *map(str, args.lengths)],
                [[r["scorer"], r["policy"], r["density"], r["average"], *r["by_length"].values()] for r in rows])
    return 0


def prompt_sizes(lengths: list[int], new_tokens: int, context: int | None) -> dict[int, int]:
    """Prompt tokens per requested length: as RULER counts it, a length at the model's context holds the prompt
    and its answer, so the prompt leaves ``new_tokens`` free; a length beyond the context is refused."""
    if context is not None and (beyond := [n for n in lengths if n > context]):
        raise ValueError(f"lengths {beyond} exceed the model's context of {context} tokens")
    if context is not None and new_tokens >= context // 2:
        raise ValueError(f"new_tokens {new_tokens} leaves too little of the model's {context}-token context for a prompt")
    sizes = {n: n if context is None else min(n, context - new_tokens) for n in lengths}
    for n, size in sizes.items():
        if size < n:
            console.log(f"length {n}: prompts of {size} tokens, {new_tokens} left for the answer in the model's {context}")
    return sizes


def collect_window(model: Any, tokenizer: Any, text: str, window: int, target: str) -> Collector:
    """One window of ``text`` through ``model`` with a per-head collector: every layer's scores, target map
    (``mass`` or ``max``), density and recall."""
    ids = token_windows(tokenizer, text, window, 1)[0]
    collector = Collector(target=target, skip_first_rows=0.0, per_head=True)
    with torch.no_grad(), collecting(hf_model_of(model.base_model), collector):
        model(input_ids=ids[None].to(model.device), use_cache=False, logits_to_keep=1)
    return collector


def sparsity_main(argv: list[str]) -> int:
    """Per-layer/head achieved density and recall of one scorer on one window; block maps of one layer/head."""
    args = parse_recipe(SparsityArgs, argv, prog="seerflex eval sparsity")
    if args is None:
        return 0
    policy, target = parse_policy(args.policy)
    if target is not None:
        raise ValueError("eval sparsity takes an explicit policy (calibrate with eval ppl)")
    if args.target not in ("mass", "max"):
        raise ValueError(f"target must be mass or max, got {args.target!r}")
    check_sweep([args.scorer], [args.policy])
    model, tokenizer = load_seerflex_model(args)
    model.set_policy(policy)
    model.set_scorer(None if args.scorer == "gate" else args.scorer)
    collector = collect_window(model, tokenizer, args.text, args.window, args.target)
    layers = sorted(collector.head_stats)
    density = [collector.head_stats[i][0].tolist() for i in layers]
    recall = [collector.head_stats[i][1].tolist() for i in layers]
    lost = [collector.head_stats[i][2].tolist() for i in layers]
    free = [collector.head_stats[i][3].tolist() for i in layers]
    out = Path(args.out)
    heads = [str(h) for h in range(len(density[0]))]
    plots.heatmap(density, [str(i) for i in layers], heads, out / "density.png", f"achieved density, {args.policy}",
                  "head", "layer")
    plots.heatmap(recall, [str(i) for i in layers], heads, out / "recall.png",
                  f"{args.scorer} recall ({args.target} covered), {args.policy}", "head", "layer")
    gate_map, truth = collector.maps[args.layer]
    plots.block_maps(gate_map[args.head].tolist(), truth[args.head].tolist(), out / "block_maps.png",
                     f"layer {args.layer}, head {args.head}")
    rows = [{"layer": i, "density": sum(d) / len(d), "recall": sum(r) / len(r), "lost_rows": sum(x) / len(x),
             "free_recall": sum(f) / len(f), "density_per_head": d, "recall_per_head": r, "lost_rows_per_head": x,
             "free_recall_per_head": f}
            for i, d, r, x, f in zip(layers, density, recall, lost, free)]
    write_json(out / "sparsity.json", {"environment": environment(), "args": asdict(args), "rows": rows})
    print_table(f"sparsity per layer ({args.policy}; lost rows: query blocks keeping under half their mass; free "
                "recall: the share of the mass beyond the always-on blocks that the chosen blocks hold)",
                ["layer", "density", "recall", "lost rows", "free recall"],
                [[r["layer"], r["density"], r["recall"], r["lost_rows"], r["free_recall"]] for r in rows])
    return 0


def budget_main(argv: list[str]) -> int:
    """Per-layer densities for an average density, from each layer's measured loss rise."""
    args = parse_recipe(LayerBudgetArgs, argv, prog="seerflex eval budget")
    if args is None:
        return 0
    if args.save_adapter and args.scorer != "gate":
        raise ValueError("save_adapter stores gates with their budget: use scorer=gate")
    check_sweep([args.scorer], [args.policy])
    base, _ = parse_policy(args.policy)
    model, tokenizer = load_seerflex_model(args)
    calibration = token_windows(tokenizer, args.budget_text, args.budget_window, args.budget_windows)
    sens = layer_sensitivity(model, args.scorer, calibration, args.budget_prefix, base=base)
    picks = allocate(sens, args.density)
    out = Path(args.out)
    rows = [{"layer": layer, "density": sens.candidates[ci], "achieved": float(sens.density[li, ci]),
             "loss_rise": float(sens.loss_rise[li, ci]), "loss_rise_per_candidate": sens.loss_rise[li].tolist()}
            for li, (layer, ci) in enumerate(zip(sens.layers, picks))]
    predicted = sum(r["loss_rise"] for r in rows)  # additive: measured joint losses were higher (RESULTS.md)
    write_json(out / "budget.json", {"environment": environment(), "args": asdict(args), "candidates": sens.candidates,
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
        save_with_policies(model, {r["layer"]: topk_like(base, r["density"]) for r in rows}, args.save_adapter)
    return 0


def save_with_policies(model: Any, policies: dict[int, Policy], path: str) -> None:
    """Write the gates with one policy per layer (``policies=[adapter]`` runs them): budgets and calibrations."""
    for i, p in policies.items():
        model.set_policy(p, layers=[i])
    model.save_pretrained(path)
    console.print(f"saved {path} (run it with policies=adapter)")


def calibrate_main(argv: list[str]) -> int:
    """A mass rule calibrated to a density on calibration text, per layer or shared; optionally saved with the gates
    (then ``policies=[adapter]`` runs it), so the evaluated text never sets it."""
    args = parse_recipe(CalibrateArgs, argv, prog="seerflex eval calibrate")
    if args is None:
        return 0
    if args.save_adapter and args.scorer != "gate":
        raise ValueError("save_adapter stores gates with their policies: use scorer=gate")
    check_sweep([args.scorer], [args.policy])
    target = parse_policy(args.policy)[1]
    if target is None:
        raise ValueError(f"{args.policy!r} has no density to calibrate to, e.g. topp:density=0.1:per_layer=true")
    targets = None
    if args.allocation:  # checked before seconds of model loading
        if not spec_fields(args.policy)[1].get("per_layer", False):
            raise ValueError(f"allocation= sets a density per layer: the policy needs :per_layer=true, got {args.policy!r}")
        targets = allocation_targets(args.allocation, target)
    model, tokenizer = load_seerflex_model(args)
    windows = token_windows(tokenizer, args.budget_text, args.budget_window, args.budget_windows)
    policy, chosen = resolve_policy(model, args.scorer, args.policy, windows, None, args.budget_prefix, targets)
    if args.allocation:
        chosen = chosen | {"allocation": args.allocation}
    per_layer = policy if isinstance(policy, dict) else {i: policy for i in model.gated_layers}
    density = layer_density(sparsity_records(model, args.scorer, per_layer, windows))
    rows = [{"layer": i, "density": density.get(i, 1.0), "policy": p.to_dict()} for i, p in per_layer.items()]
    write_json(Path(args.out) / "calibrate.json", {"environment": environment(), "args": asdict(args),
                                                   "calibrated": chosen, "rows": rows})
    print_table(f"{args.policy} on {args.budget_text} ({args.scorer})", ["layer", "density", "policy"],
                [[r["layer"], r["density"], f"{r['policy']['type']} {r['policy'][MAIN_FIELD[r['policy']['type']]]:.4g}"]
                 for r in rows])
    if args.save_adapter:
        save_with_policies(model, per_layer, args.save_adapter)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "budget": budget_main, "calibrate": calibrate_main, "ppl": ppl_main, "passkey": passkey_main,
    "needle": lambda argv: passkey_main(argv, "needle"), "ruler": ruler_main, "sparsity": sparsity_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        console.print(f"usage: seerflex eval {{{','.join(COMMANDS)}}} [CONFIG.yaml] [key=value ...]\n\n{__doc__}",
                      markup=False, highlight=False)
        return 0
    if argv[0] not in COMMANDS:
        raise ValueError(f"unknown eval command {argv[0]!r}; choose one of {sorted(COMMANDS)}")
    return COMMANDS[argv[0]](argv[1:])
