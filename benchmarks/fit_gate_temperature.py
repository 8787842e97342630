"""Experiment (issue 15): are the gates' probabilities too flat or too sharp per layer and head for a budget rule?

On one calibration window (not the evaluated text) collect every layer's gate probabilities and the true block
mass, fit per (layer, head) the temperature T minimising KL(mass || softmax(log p / T)) on a grid, and write a
copy of the adapter whose K maps are scaled by 1 / T (the logits are linear in them), so `seerflex eval ppl` can
read the calibrated gates under threshold / top-p rules. Top-k is unchanged by construction.

    python benchmarks/fit_gate_temperature.py --adapter seerflex/adapters/smollm2-mix \
        --text corpus:DIR:split=train:domains=docs --out /tmp/gates_T
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from seerflex.recipes.eval import SparsityArgs, collect_window, load_seerflex_model

GRID = torch.exp(torch.linspace(-1.6, 1.6, 65))  # T from 0.2 to 5


def fit(probs: torch.Tensor, target: torch.Tensor, skip: float = 0.25) -> torch.Tensor:
    """[H, nq, nk] probabilities and mass -> [H] temperatures on ``GRID`` minimising the KL over rows >= skip."""
    first = int(probs.shape[-2] * skip)
    logp, t = probs[:, first:].double().log(), target[:, first:].double()
    best = []
    for h in range(probs.shape[0]):
        kl = [(t[h] * (t[h].clamp_min(1e-30).log() - (logp[h] / temp).log_softmax(-1))).where(t[h] > 0, 0).sum()
              for temp in GRID.tolist()]
        best.append(GRID[int(torch.stack(kl).argmin())])
    return torch.stack(best)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adapter", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--window", type=int, default=8192)
    a = p.parse_args()
    args = SparsityArgs(adapter=a.adapter, text=a.text, window=a.window, device="cpu", dtype="float32")
    model, tokenizer = load_seerflex_model(args)
    collector = collect_window(model, tokenizer, args.text, args.window, "mass")
    temps = {layer: fit(*collector.maps[layer]) for layer in sorted(collector.maps)}
    out = Path(a.out)
    shutil.copytree(a.adapter, out, dirs_exist_ok=True)
    weights = load_file(str(out / "adapter_model.safetensors"))
    for layer, t in temps.items():
        key = f"model.layers.{layer}.self_attn.seerflex_gate.k_weight"
        weights[key] = (weights[key] / t.to(weights[key].dtype)[:, None, None]).contiguous()
    save_file(weights, str(out / "adapter_model.safetensors"))
    (out / "temperatures.json").write_text(json.dumps({str(k): v.tolist() for k, v in temps.items()}))
    for layer, t in temps.items():
        print(layer, [round(x, 2) for x in t.tolist()])


if __name__ == "__main__":
    main()
