"""``seerflex distill RECIPE [key=value ...]``: train gates by self-distillation.

A plain loop in the torchtune spirit: a YAML recipe (see ``recipes/distill_smollm2.yaml``), command
line overrides, and nothing hidden. The base model is frozen; only gate weights train, against the
block attention map of the model's own dense attention (``seerflex.ground_truth``). Because no
base parameter needs a gradient, the base model stores no activations for backward and gradient
checkpointing would save nothing. ``accelerate`` places devices, runs bf16 autocast and wraps the
model for DDP under ``accelerate launch`` / ``torchrun``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seerflex.config import SeerFlexConfig
from seerflex.console import console, progress, warn
from seerflex.distill import checkpoint
from seerflex.distill.collector import Collector, collecting
from seerflex.distill.data import check_mixture, mixed_pieces
from seerflex.layout import BlockLayout
from seerflex.policies import Policy
from seerflex.recipes.common import (data_fingerprint, end_step, open_run, print_table, resume_step, start_training,
                                     step_batch, warn_if_other_data)
from seerflex.recipes.config import knob, parse_recipe
from seerflex.runtime import LEGACY_ADAPTER_FIELDS, RuntimeOptions
from seerflex.texts import load_domains


@dataclass
class DistillRecipe:
    """Train gates by self-distillation; every key can come from the YAML file or a key=value override."""

    model: str = knob("smollm2", "smollm2, qwen2.5-coder-0.5b (offline, seerflex.assets) or a transformers folder / hub id")
    data: str = knob("austen:exclude=Emma", "text source (seerflex.texts): austen[:...], corpus:FOLDER, files, "
                                            "folders or a hub dataset")
    mixture: dict = knob({}, "domain -> weight for a corpus: source (empty: every document once per epoch)")
    text_field: str = knob("text", "column holding the text in json/parquet/hub data")
    seq_len: int = knob(8192, "tokens per training sequence")
    batch_size: int = knob(1, "sequences per step and device")
    steps: int = knob(100, "optimizer steps")
    lr: float = knob(1e-3, "AdamW learning rate (warm-up, then cosine)")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    warmup_steps: int = knob(20, "linear warm-up steps")
    seed: int = knob(0, "seed of the gate initialisation and the data order")
    bf16: bool = knob(True, "bf16 autocast on CUDA")
    target: str = knob("max", "ground truth: 'max' (the original's 2D max) or 'mass' (block probability mass)")
    reduction: str = knob("mean", "KL reduction: 'mean' (original) or 'batchmean'")
    skip_first_rows: float = knob(0.25, "fraction of the first query-block rows left out of the loss")
    loss_scale: float = knob(10.0, "loss multiplier (the original's x10; under AdamW it only moves eps's share)")
    kl_blocks: str = knob("free", "'free': the KL over the blocks the policy does not keep anyway (sink, local, diagonal), "
                                  "renormalised, so the gates learn only the choices they make (lower perplexity than "
                                  "'all' in every domain on SmolLM2 and Qwen, RESULTS.md); the adapter records the "
                                  "always-on blocks its scores never learnt to rank (free_beyond), and policies with "
                                  "fewer sink / local blocks are refused. 'all': the KL over whole rows (the original's)")
    row_focus: float = knob(0.0, "weigh each query-block row's KL by 1 + row_focus x the mass the gates' current "
                                 "selection misses there: training effort where rows lose most of their attention")
    checkpoint_every: int = knob(50, "steps between atomic checkpoints")
    output_dir: str = knob("runs/distill", "folder for metrics, checkpoint and the adapter")
    resume: bool = knob(False, "continue from output_dir/checkpoint")
    overwrite: bool = knob(False, "start over in an output_dir that holds a run (its metrics and checkpoint go)")
    seerflex: dict = knob({}, "SeerFlexConfig fields: gate_type, block_size, q_block_size, gate_hidden_size, policy, "
                                  "layer_policies")
    runtime: dict = knob({}, "RuntimeOptions fields (compile, backend, check_finite); every call is scored, "
                             "so dense_below is 0")

    def __post_init__(self) -> None:
        """Every value checked before seconds of model loading."""
        for name in ("seq_len", "batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need warmup_steps >= 0, lr > 0 and weight_decay >= 0, got {self.warmup_steps}, "
                             f"{self.lr}, {self.weight_decay}")
        if self.target not in ("max", "mass") or self.reduction not in ("mean", "batchmean"):
            raise ValueError(f"target must be max or mass and reduction mean or batchmean, got {self.target!r}, "
                             f"{self.reduction!r}")
        if not 0 <= self.skip_first_rows < 1:
            raise ValueError(f"skip_first_rows must be in [0, 1), got {self.skip_first_rows}")
        if self.kl_blocks not in ("all", "free"):
            raise ValueError(f"kl_blocks must be all or free, got {self.kl_blocks!r}")
        if not (math.isfinite(self.row_focus) and self.row_focus >= 0):
            raise ValueError(f"row_focus must be a finite number >= 0, got {self.row_focus}")
        check_mixture(self.mixture, self.data)
        self.configs()

    def configs(self) -> tuple[SeerFlexConfig, RuntimeOptions]:
        """The gate config and the runtime options this recipe asks for."""
        legacy = {k: v for k, v in self.seerflex.items() if k in LEGACY_ADAPTER_FIELDS}  # older recipes' runtime keys
        if "free_beyond" in self.seerflex:
            raise ValueError("seerflex.free_beyond is not a recipe key: kl_blocks=free writes it")
        config = SeerFlexConfig.from_dict({k: v for k, v in self.seerflex.items() if k not in legacy})
        if self.kl_blocks == "free":  # the adapter records which blocks its scores never learnt (SeerFlexConfig)
            policies = (config.policy, *config.layer_policies.values())
            always_on = sorted({(p.sink, p.local) for p in policies})
            if len(always_on) > 1:
                raise ValueError(f"kl_blocks=free needs one sink and local in every layer's policy (the adapter records "
                                 f"them), got (sink, local) {always_on}")
            self.check_free_blocks(config, policies)
            config = SeerFlexConfig.from_dict(config.to_dict() | {"free_beyond": {
                "sink": config.policy.sink, "local": config.policy.local}})
        return config, RuntimeOptions(**{**legacy, **self.runtime, "dense_below": 0})

    def check_free_blocks(self, config: SeerFlexConfig, policies: tuple[Policy, ...]) -> None:
        """Refuse a free KL with nothing to learn: in short pieces every block a row may attend can be always-on."""
        layout = BlockLayout(self.seq_len, config.block_size, None, config.q_block_size)
        cpu = torch.device("cpu")
        for policy in policies:
            free = layout.selectable_blocks(cpu) & ~policy.always_on(layout, cpu)
            if not free[..., int(layout.num_q_blocks * self.skip_first_rows):, :].any():
                raise ValueError(f"kl_blocks=free: at seq_len={self.seq_len} every block the trained rows may attend "
                                 f"is always-on under {policy.name} (sink={policy.sink}, local={policy.local}), so "
                                 "the gates would learn nothing; use longer pieces or kl_blocks=all")


RESUME_KEYS = ("data", "mixture", "seq_len", "batch_size", "steps", "lr", "weight_decay", "warmup_steps", "seed", "target",
               "reduction", "skip_first_rows", "loss_scale", "row_focus", "kl_blocks")


def train(recipe: DistillRecipe, model: Any = None, tokenizer: Any = None) -> Path:
    """Run (or resume) a distillation; returns the folder of the saved adapter."""
    from transformers import get_cosine_schedule_with_warmup

    from seerflex.hf.families import hf_model_of
    from seerflex.hf.model import get_seerflex_model

    accelerator, model, tokenizer = start_training(recipe, model, tokenizer, frozen=True)
    config, runtime = recipe.configs()
    wrapped = get_seerflex_model(model, config, runtime=runtime)
    pieces, epoch, counts = mixed_pieces(load_domains(recipe.data, recipe.text_field), tokenizer, recipe.seq_len,
                                         recipe.mixture, recipe.seed)
    console.log(f"training pieces of {recipe.seq_len} tokens: {counts}")
    data = data_fingerprint(pieces, epoch)
    params = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps, recipe.steps)
    out = Path(recipe.output_dir)
    ckpt_dir = out / "checkpoint"
    start = resume_step(out, recipe.resume, recipe.overwrite, params, optimizer, scheduler,
                        lambda found, state, gates: check_resumable(found, state, gates, params, config, recipe, data))
    # the scheduler stays unprepared: accelerate would step it once per process, and the schedule is per step
    runner, optimizer = accelerator.prepare(wrapped, optimizer)
    collector = Collector(recipe.target, recipe.reduction, recipe.skip_first_rows, row_focus=recipe.row_focus,
                          kl_blocks=recipe.kl_blocks)
    metrics_file = open_run(accelerator, recipe, out, start, pieces=counts)
    last: dict[str, Any] = {}
    with collecting(hf_model_of(model), collector), \
            progress(transient=False, disable=not accelerator.is_main_process) as bar:
        task = bar.add_task("distill", total=recipe.steps, completed=start, info="")
        for step in range(start, recipe.steps):
            tic = time.perf_counter()
            ids = step_batch(accelerator, recipe, pieces, epoch, step)
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
                    "tokens_per_s": ids.numel() * accelerator.num_processes / seconds, "layer_kl": layer_kl}
            collector.clear()
            bar.update(task, advance=1, info=f"loss {last['loss']:.4f}  recall {last['recall']:.3f}  "
                                                  f"KL/layer mean {last['layer_kl_mean']:.4f} max {last['layer_kl_max']:.4f}")
            end_step(accelerator, recipe, metrics_file, last, lambda: checkpoint.save(
                ckpt_dir, dict(params), {"step": step + 1, "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "config": config.to_dict(),
                                         "recipe": {k: getattr(recipe, k) for k in RESUME_KEYS}, "data": data}))
    adapter = out / "adapter"
    if accelerator.is_main_process:
        accelerator.unwrap_model(runner).save_pretrained(adapter)
        if last:
            print_table("distillation, last step", list(k for k in last if k != "layer_kl"),
                        [[v for k, v in last.items() if k != "layer_kl"]])
        console.print(f"adapter saved to {adapter}")
    return adapter


def check_resumable(ckpt_dir: Path, state: dict[str, Any], gates: dict[str, torch.Tensor],
                    params: dict[str, torch.nn.Parameter], config: SeerFlexConfig, recipe: DistillRecipe,
                    data: str) -> None:
    """Refuse a checkpoint of other gates, or of another loss (``kl_blocks``, and under the free KL the always-on
    blocks it left out); warn about training settings that changed since it was made."""
    saved, now = state.get("config"), config.to_dict()
    if saved is not None:  # checkpoints from before rectangular blocks had square ones
        saved = {"q_block_size": saved.get("block_size")} | saved
    architecture = ("gate_type", "block_size", "q_block_size", "gate_hidden_size")  # else the policy only changes the
    # logged recall, but under kl_blocks=free its sink / local set the loss (free_beyond, checked below)
    if saved is not None and any(saved.get(k) != now.get(k) for k in architecture):
        changed = [k for k in architecture if saved.get(k) != now.get(k)]
        raise ValueError(f"the checkpoint in {ckpt_dir} is for another gate config (differs in {', '.join(changed)}); "
                         "resume with the recipe that made it, or use another output_dir")
    wrong = sorted(n for n, p in params.items() if n not in gates or tuple(gates[n].shape) != tuple(p.shape))
    if wrong or set(gates) != set(params):
        raise ValueError(f"the checkpoint in {ckpt_dir} holds other gates than this model and config "
                         f"(e.g. {(wrong or sorted(set(gates) ^ set(params)))[0]})")
    before = state.get("recipe", {})
    if before and before.get("kl_blocks", "all") != recipe.kl_blocks:  # runs from before the knob: whole rows
        raise ValueError(f"the checkpoint in {ckpt_dir} was trained with kl_blocks={before.get('kl_blocks', 'all')}: "
                         f"resume with that (kl_blocks={recipe.kl_blocks} would change the loss and the adapter mid-run)")
    if saved is not None and "free_beyond" in saved and saved["free_beyond"] != now["free_beyond"]:
        raise ValueError(f"the checkpoint in {ckpt_dir} left out the always-on blocks {saved['free_beyond']} from its "
                         f"KL, this recipe's policy {now['free_beyond']}: resume with the policy's sink and local that made it")
    changed = [f"{k} {before[k]!r} -> {getattr(recipe, k)!r}" for k in RESUME_KEYS
               if k in before and before[k] != getattr(recipe, k)]
    if changed:
        warn(f"resuming with changed settings: {'; '.join(changed)}")
    warn_if_other_data(ckpt_dir, state, data)


def main(argv: list[str]) -> int:
    recipe = parse_recipe(DistillRecipe, argv, prog="seerflex distill")
    if recipe is not None:
        train(recipe)
    return 0
