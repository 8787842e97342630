"""``seerflex distill RECIPE [key=value ...]``: train gates by self-distillation.

A plain loop in the torchtune spirit: a YAML recipe (see ``recipes/distill_smollm2.yaml``), command
line overrides, and nothing hidden. The base model is frozen; only gate weights train, against the
block attention map of the model's own dense attention (``seerflex.ground_truth``). Because no
base parameter needs a gradient, the base model stores no activations for backward and gradient
checkpointing would save nothing. ``accelerate`` places devices, runs bf16 autocast and wraps the
model for DDP under ``accelerate launch`` / ``torchrun``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from seerflex.config import SeerFlexConfig
from seerflex.distill import checkpoint
from seerflex.distill.collector import Collector, collecting
from seerflex.distill.data import batch_indices, load_texts, pack
from seerflex.recipes.common import console, environment, print_table, write_json


@dataclass
class DistillRecipe:
    """Every knob of a distillation run; YAML keys and ``key=value`` overrides use these names."""

    model: str = "smollm2"  # "smollm2" (bundled, see seerflex.assets) or a transformers folder / hub id
    data: str = "austen:exclude=Emma"
    text_field: str = "text"
    seq_len: int = 8192
    batch_size: int = 1
    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    seed: int = 0
    bf16: bool = True
    target: str = "max"  # the original's 2D-max target; "mass" is the alternative
    reduction: str = "mean"
    skip_first_rows: float = 0.25
    loss_scale: float = 10.0
    checkpoint_every: int = 50
    output_dir: str = "runs/distill"
    resume: bool = False
    seerflex: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None, overrides: list[str]) -> "DistillRecipe":
        data = yaml.safe_load(Path(path).read_text()) if path else {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not key=value")
            target = data
            *parents, leaf = key.split(".")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = yaml.safe_load(value)
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown recipe keys {sorted(set(data) - known)}; known: {sorted(known)}")
        return cls(**data)


def load_model(name: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "smollm2":
        from seerflex.assets import smollm2_hf_dir

        name = str(smollm2_hf_dir())
    return AutoModelForCausalLM.from_pretrained(name, dtype=dtype), AutoTokenizer.from_pretrained(name)


def train(recipe: DistillRecipe, model: Any = None, tokenizer: Any = None) -> Path:
    """Run (or resume) a distillation; returns the folder of the saved adapter."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    from seerflex.hf.families import hf_model_of
    from seerflex.hf.model import get_seerflex_model

    use_bf16 = recipe.bf16 and torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no")
    torch.manual_seed(recipe.seed)
    if model is None:
        with accelerator.main_process_first():  # the first load may convert/cache the model: once, not per rank
            model, tokenizer = load_model(recipe.model, torch.bfloat16 if use_bf16 else torch.float32)
    wrapped = get_seerflex_model(model, SeerFlexConfig.from_dict(recipe.seerflex))
    pieces = pack(load_texts(recipe.data, recipe.text_field), tokenizer, recipe.seq_len)
    params = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps, recipe.steps)
    out = Path(recipe.output_dir)
    ckpt_dir, start = out / "checkpoint", 0
    if recipe.resume and (ckpt_dir / checkpoint.STATE).is_file():
        gates, state = checkpoint.load(ckpt_dir)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(gates[name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        console.log(f"resumed from {ckpt_dir} at step {start}")
    # the scheduler stays unprepared: accelerate would step it once per process, and the schedule is per step
    runner, optimizer = accelerator.prepare(wrapped, optimizer)
    collector = Collector(recipe.target, recipe.reduction, recipe.skip_first_rows)
    world, rank = accelerator.num_processes, accelerator.process_index
    metrics_file = out / "metrics.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", {"recipe": asdict(recipe), "environment": environment(),
                                         "pieces": pieces.shape[0], "world_size": world})
    columns = [TextColumn("[bold]distill"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    last: dict[str, Any] = {}
    with collecting(hf_model_of(model), collector), Progress(*columns, console=console,
                                                             disable=not accelerator.is_main_process) as progress:
        task = progress.add_task("distill", total=recipe.steps, completed=start, info="")
        for step in range(start, recipe.steps):
            tic = time.perf_counter()
            chosen = batch_indices(step, recipe.batch_size * world, pieces.shape[0], recipe.seed)
            ids = pieces[chosen[rank * recipe.batch_size:(rank + 1) * recipe.batch_size]].to(accelerator.device)
            with accelerator.autocast():
                runner(input_ids=ids, use_cache=False, logits_to_keep=1)
            loss = collector.total(recipe.loss_scale)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tic
            layer_kl = [float(collector.losses[i].detach()) for i in sorted(collector.losses)]
            last = {"step": step + 1, "loss": float(loss.detach()), "recall": sum(collector.recalls.values()) / len(collector.recalls),
                    "layer_kl_mean": sum(layer_kl) / len(layer_kl), "layer_kl_max": max(layer_kl),
                    "lr": scheduler.get_last_lr()[0], "steps_per_s": 1 / seconds,
                    "tokens_per_s": ids.numel() * world / seconds, "layer_kl": layer_kl}
            collector.clear()
            progress.update(task, advance=1, info=f"loss {last['loss']:.4f}  recall {last['recall']:.3f}  "
                                                  f"KL/layer mean {last['layer_kl_mean']:.4f} max {last['layer_kl_max']:.4f}")
            if accelerator.is_main_process:
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(last) + "\n")
                if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.steps:
                    checkpoint.save(ckpt_dir, {n: p for n, p in params.items()},
                                    {"step": step + 1, "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict()})
    adapter = out / "adapter"
    if accelerator.is_main_process:
        accelerator.unwrap_model(runner).save_pretrained(adapter)
        if last:
            print_table("distillation, last step", list(k for k in last if k != "layer_kl"),
                        [[v for k, v in last.items() if k != "layer_kl"]])
        console.print(f"adapter saved to {adapter}")
    return adapter


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        console.print(__doc__)
        console.print("keys: " + ", ".join(f.name for f in fields(DistillRecipe)))
        return 0 if argv else 2
    recipe_path = None if "=" in argv[0] else argv[0]
    train(DistillRecipe.load(recipe_path, argv[1:] if recipe_path else argv))
    return 0
