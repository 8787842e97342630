"""The long-context fine-tune comparison (benchmarks/gpu_finetune.sh) as Markdown tables and one plot.

    python benchmarks/finetune_table.py benchmarks/results/finetune_h200_2026-12-01

Routes, all SmolLM2-135M extended 8k -> 32k with YaRN x4 on the same data, steps and seed: the dense fine-tune
(the model's own attention, no gates), seerflex fine-tunes at density 0.5 and 0.1 (read with their own gates
at that density), and distil-after (gates distilled on the dense fine-tune, read at 0.5 and 0.1); the oracle
top-k on the dense fine-tune shows what a selection at that density can reach.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

DOMAINS = ("prose", "docs", "code")


def metrics(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def ppl(folder: Path, run: str, domain: str, scorer: str, policy: str) -> tuple[float, float]:
    rows = json.loads((folder / "eval" / f"ppl_{run}_{domain}" / "ppl.json").read_text())["rows"]
    row = next(r for r in rows if r["scorer"] == scorer and r["policy"] == policy)
    return row["ppl"], row["density"]


def main(folder: Path) -> None:
    routes = [("base model, no fine-tune (8k model at 32k)", "base", "dense", "-"),
              ("dense fine-tune (SDPA, no gates)", "dense", "dense", "-"),
              ("seerflex fine-tune 0.5, its gates top-k 0.5", "ft0.5", "gate", "topk:0.5"),
              ("seerflex fine-tune 0.5 from distilled gates (kl_rows 0.125), top-k 0.5", "ft_d0.5_init", "gate", "topk:0.5"),
              ("distil-after, top-k 0.5", "dense", "gate", "topk:0.5"),
              ("oracle top-k 0.5 on the dense fine-tune", "dense", "oracle", "topk:0.5"),
              ("seerflex fine-tune 0.1, its gates top-k 0.1", "ft0.1", "gate", "topk:0.1"),
              ("same, gate target on 1/8 of the rows (kl_rows 0.125)", "ft_d0.1_rows", "gate", "topk:0.1"),
              ("seerflex fine-tune 0.1 from distilled gates (kl_rows 0.125)", "ft_d0.1_init", "gate", "topk:0.1"),
              ("distil-after, top-k 0.1", "dense", "gate", "topk:0.1"),
              ("oracle top-k 0.1 on the dense fine-tune", "dense", "oracle", "topk:0.1")]
    ref = {d: ppl(folder, "dense", d, "dense", "-")[0] for d in DOMAINS}
    print("| route | density | " + " | ".join(DOMAINS) + " |\n| --- | --- |" + " --- |" * len(DOMAINS))
    bars = {}
    for label, run, scorer, policy in routes:
        if not (folder / "eval" / f"ppl_{run}_{DOMAINS[0]}").is_dir():
            continue  # a route this folder's runs did not include
        cells, density = [], 1.0
        for d in DOMAINS:
            value, density = ppl(folder, run, d, scorer, policy)
            rise = value / ref[d] - 1
            cells.append(f"{value:.3f}" + ("" if run == "base" or label.startswith("dense") else f" ({rise:+.1%})"))
            bars.setdefault(label, []).append(rise)
        print(f"| {label} | {density:.3f} | " + " | ".join(cells) + " |")
    print("\n| run | median step (s), steps 31-80 | peak GPU memory (GiB) | LM loss, mean of the last 10 steps |"
          "\n| --- | --- | --- | --- |")
    curves = {}
    for run in ("ft_dense", "ft_d0.5", "ft_d0.1"):
        rows = metrics(folder / run / "metrics.jsonl")
        curves[run] = [r["lm_loss"] for r in rows]
        print(f"| {run} | {statistics.median(r['step_s'] for r in rows[30:]):.3f} | "
              f"{max(r['peak_gb'] for r in rows):.2f} | {statistics.mean(curves[run][-10:]):.3f} |")
    long_runs(folder)
    speed(folder / "speed")
    print("\n| passkey (2 trials x depths 0.1-0.9) | 16k | 32k |\n| --- | --- | --- |")
    for run, label in (("pk_dense", "dense fine-tune"), ("pk_ft0.1", "seerflex fine-tune 0.1"),
                       ("pk_ft0.1init", "seerflex fine-tune 0.1 from distilled gates")):
        if not (folder / "eval" / run).is_dir():
            continue
        for row in json.loads((folder / "eval" / run / "passkey.json").read_text())["rows"]:
            name = f"{label}, {'dense attention' if row['scorer'] == 'dense' else 'gates top-k 0.1'}"
            if run == "pk_dense" and row["scorer"] == "gate":
                name = "distil-after, gates top-k 0.1"
            print(f"| {name} | " + " | ".join(f"{sum(g) / len(g):.1f}" for g in row["grid"]) + " |")
    plot(folder, curves, {k: v for k, v in bars.items() if "base" not in k and not k.startswith("dense")})


def long_runs(folder: Path) -> None:
    """The 200-step pair (gpu_finetune.sh ft_long): dense fine-tune vs seerflex 0.1 from distilled gates."""
    runs = sorted(p.name.removeprefix("ft_dense_") for p in folder.glob("ft_dense_*") if p.name[9:].isdigit())
    for n in runs:
        ref = {d: ppl(folder, f"ft_dense_{n}", d, "dense", "-")[0] for d in DOMAINS}
        print(f"\n| {n} steps | density | " + " | ".join(DOMAINS) + " |\n| --- | --- |" + " --- |" * len(DOMAINS))
        print("| dense fine-tune | 1.000 | " + " | ".join(f"{ref[d]:.3f}" for d in DOMAINS) + " |")
        for label, scorer, policy in (("its dense attention", "dense", "-"), ("its gates, top-k 0.1", "gate", "topk:0.1")):
            cells = [ppl(folder, f"ft_d0.1_init_{n}", d, scorer, policy) for d in DOMAINS]
            print(f"| seerflex fine-tune 0.1 from distilled gates, {label} | {cells[0][1]:.3f} | "
                  + " | ".join(f"{v:.3f} ({v / ref[d] - 1:+.1%})" for (v, _), d in zip(cells, DOMAINS)) + " |")


SPEED = {"sdpa": "dense, SDPA (the model's own attention)", "flex": "dense, transformers' flex_attention",
         "d0.1_rows1": "seerflex d 0.1, gate target on every row (kl_rows 1)",
         "d0.1": "seerflex d 0.1, gate target on 1/8 of the rows (kl_rows 0.125)",
         "d0.1_nokl": "seerflex d 0.1, no gate loss (kl_weight 0; target still on 1% of the rows)",
         "d0.1_b128_flash": "seerflex d 0.1, 128 x 128 blocks, FLASH (FA4) forward and backward"}
CALLS = (("", "first call (a host sync per layer)"), ("_2", "second call (no per-layer host syncs)"),
         ("_3", "third call (backward tiles with 3 stages; SDPA's per-step metrics did not come back: its step 12 "
                "took 0.427 s, 38.71 GiB, speed/speed3_log.txt)"))


def speed(folder: Path) -> None:
    """The 12-step runs of each call (gpu_finetune.sh speed, speed2, speed3), side by side within a call: step time
    and peak memory."""
    if not folder.is_dir():
        return
    for suffix, call in CALLS:
        rows = {name: metrics(folder / f"speed_{name}{suffix}.jsonl")
                for name in SPEED if (folder / f"speed_{name}{suffix}.jsonl").is_file()}
        median = {name: statistics.median(r["step_s"] for r in runs[4:]) for name, runs in rows.items()}
        print(f"\n| 32k step, H200, {call}, steps 5-12 | median step (s) | vs dense flex | vs SDPA | peak memory (GiB) |"
              "\n| --- | --- | --- | --- | --- |")
        for name, runs in rows.items():
            vs_sdpa = f"{median['sdpa'] / median[name]:.2f}x" if "sdpa" in median else "-"
            print(f"| {SPEED[name]} | {median[name]:.3f} | {median['flex'] / median[name]:.2f}x | {vs_sdpa} | "
                  f"{max(r['peak_gb'] for r in runs):.2f} |")


def plot(folder: Path, curves: dict[str, list[float]], bars: dict[str, list[float]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    dense = curves.pop("ft_dense")  # the same sequences at every step: the difference shows the cost of sparsity
    for run, losses in curves.items():
        a.plot(range(1, len(losses) + 1), [x - y for x, y in zip(losses, dense)], label=run)
    a.axhline(0, color="gray", lw=0.8)
    a.set(xlabel="step", ylabel="LM loss minus the dense fine-tune's", title="training loss vs dense (same batch)")
    a.legend()
    width = 0.8 / len(bars)
    for i, (label, rises) in enumerate(bars.items()):
        b.bar([x + i * width for x in range(len(DOMAINS))], [100 * r for r in rises], width, label=label)
    b.set_xticks([x + 0.4 - width / 2 for x in range(len(DOMAINS))], DOMAINS)
    b.set(ylabel="perplexity rise vs dense fine-tune (%)", title="32k, held-out")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "finetune.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
