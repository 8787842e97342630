"""``seerflex finetune RECIPE [key=value ...]``: extend a model's context and fine-tune it with its gates'
block-sparse attention in the forward pass (the SeerAttention paper's second use).

Per step: the density follows a schedule from dense (1.0) to the target; every layer's gate scores its
blocks, the policy keeps the top ones, and the model's attention runs block-sparse over them (flex with a
BlockMask and its backward on CUDA; masked SDPA elsewhere). The loss is the language-model loss, which
trains the model's trainable part (LoRA adapters through peft, or every weight), plus ``kl_weight`` x the
gates' KL against the block attention map of the same Q/K, which trains only the gates. Differences from
the original: the gates' target is computed by ``seerflex.ground_truth`` from the model's own post-RoPE
Q/K (the original's fused kernel returns it from the attention itself) on a random 1/8 of the query-block
rows (``kl_rows``; two dense Q.K passes over every row would cost more than the sparse attention), and the
density is a top-k schedule rather than a fixed threshold. Once the density stops changing, each sparse layer's
fused graph replays as a CUDA graph (``cuda_graphs``): the 32k step is host-bound without. ``accelerate``
places devices, runs bf16 autocast and wraps the model for DDP or FSDP2 under ``accelerate launch``
(``--use_fsdp --fsdp_version 2``; FSDP1, DeepSpeed and FSDP on a CPU are refused with one line). Checkpoints
are atomic, hold the whole trained tensors and optimizer state in one format for any launch (under FSDP every
rank gathers, rank 0 writes), and resume exactly; the end of a run exports a transformers model with its rope
scaling, the seerflex gates, and the LoRA adapter.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from seerflex.compile import compiles
from seerflex.config import SeerFlexConfig
from seerflex.console import console, progress, warn
from seerflex.distill import checkpoint
from seerflex.distill.data import check_mixture, mixed_pieces
from seerflex.finetune import GateLoss, extend_context
from seerflex.flex import kernel_backend
from seerflex.hf.families import hf_model_of
from seerflex.policies import TopK
from seerflex.recipes.common import (checkpoint_due, data_fingerprint, end_step, load_checkpoint, open_run, print_table,
                                     start_training, step_batch, warn_if_other_data)
from seerflex.recipes.config import knob, parse_recipe
from seerflex.runtime import RuntimeOptions
from seerflex.texts import load_domains

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
# what must match to resume a checkpoint: the trained tensors' meaning
ARCHITECTURE = ("model", "rope_factor", "rope_type", "trainable", "lora", "gates", "gates_from", "seerflex")
# what changes the rest of the run if it changes on resume (a warning)
DATA_KEYS = ("data", "mixture", "seq_len", "batch_size", "steps", "seed", "lr", "gate_lr", "warmup_steps", "density",
             "schedule_steps", "kl_weight", "kl_rows")


@dataclass
class FinetuneRecipe:
    """Extend the context (YaRN) and fine-tune model and gates together through sparse attention."""

    model: str = knob("smollm2", "smollm2, qwen2.5-coder-0.5b (offline, seerflex.assets) or a transformers folder / hub id")
    data: str = knob("austen:exclude=Emma", "text source (seerflex.texts): austen[:...], corpus:FOLDER, files, ...")
    mixture: dict = knob({}, "domain -> weight for a corpus: source")
    text_field: str = knob("text", "column holding the text in json/parquet/hub data")
    seq_len: int = knob(32768, "tokens per training sequence (the extended context)")
    batch_size: int = knob(1, "sequences per step and device")
    steps: int = knob(100, "optimizer steps")
    lr: float = knob(2e-4, "learning rate of the model's trainable part")
    gate_lr: float = knob(1e-3, "learning rate of the gates")
    weight_decay: float = knob(0.0, "AdamW weight decay of the model's trainable part")
    warmup_steps: int = knob(10, "linear warm-up steps, then cosine")
    seed: int = knob(0, "seed of initialisations and the data order")
    bf16: bool = knob(True, "bf16 autocast on CUDA")
    rope_factor: float = knob(4.0, "context extension factor (1: keep the model's rope)")
    rope_type: str = knob("yarn", "rope scaling: yarn or linear")
    trainable: str = knob("lora", "lora (peft adapters on lora.target_modules) or full (every weight)")
    lora: dict = knob(dict(LORA), "LoRA: r, alpha, dropout, target_modules")
    gates: bool = knob(True, "train gates and run their sparse attention; false: a plain dense fine-tune of the "
                              "extended model (its own attention), the baseline of the distil-after route")
    gates_from: str | None = knob(None, "seerflex adapter whose gates start training (e.g. distilled on the base "
                                        "model); its gate config replaces `seerflex` (gates distilled with "
                                        "kl_blocks=free keep their free_beyond, though the fine-tune's KL covers "
                                        "whole rows)")
    density: float = knob(0.1, "target block density (top-k) of the sparse attention")
    schedule_steps: int = knob(50, "steps over which the density falls linearly from 1.0 to `density`")
    kl_weight: float = knob(1.0, "weight of the gates' KL loss (summed over layers)")
    target: str = knob("mass", "gate target: mass (block probability mass) or max (the original's 2D max)")
    skip_first_rows: float = knob(0.25, "fraction of the first query-block rows left out of the KL")
    kl_rows: float = knob(0.125, "fraction of the remaining query-block rows whose target the KL uses, drawn "
                                 "afresh per layer and step (the target costs two dense Q.K passes over its rows)")
    cuda_graphs: bool = knob(True, "on CUDA, once the density stops changing (after the schedule), each sparse "
                                   "layer's fused graph replays as a CUDA graph (RuntimeOptions.cuda_graphs): less "
                                   "host time a step (H200, 32k: RESULTS.md); the first two steps after the switch "
                                   "compile and record; not under FSDP, whose parameters move between steps")
    dense_attention: str = knob("sdpa", "attention of a gates=false run: sdpa, or flex_attention (transformers' "
                                        "dense flex, the speed baseline)")
    checkpoint_every: int = knob(50, "steps between atomic checkpoints")
    output_dir: str = knob("runs/finetune", "folder for metrics, checkpoint and the exported model")
    resume: bool = knob(False, "continue from output_dir/checkpoint")
    overwrite: bool = knob(False, "start over in an output_dir that holds a run")
    seerflex: dict = knob({}, "SeerFlexConfig fields (the policy gives sink/local/dense_last_rows; the schedule "
                              "sets its density)")
    runtime: dict = knob({}, "RuntimeOptions fields (compile, backend); every call runs sparse (dense_below 0); "
                             "check_finite defaults to off: the loss is checked once per step instead of a host "
                             "sync per layer")

    def __post_init__(self) -> None:
        """Every value checked before seconds of model loading."""
        for name in ("seq_len", "batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.gate_lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.schedule_steps < 0:
            raise ValueError("need lr > 0, gate_lr > 0, weight_decay >= 0, warmup_steps >= 0 and schedule_steps >= 0")
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.rope_factor < 1 or self.rope_type not in ("yarn", "linear"):
            raise ValueError(f"rope_factor must be >= 1 and rope_type yarn or linear, got {self.rope_factor}, "
                             f"{self.rope_type!r}")
        if self.trainable not in ("lora", "full"):
            raise ValueError(f"trainable must be lora or full, got {self.trainable!r}")
        unknown = set(self.lora) - set(LORA)
        if unknown:
            raise ValueError(f"unknown lora keys {sorted(unknown)}; known: {sorted(LORA)}")
        for bad, message in ((self.target not in ("max", "mass"), f"target must be max or mass, got {self.target!r}"),
                             (not 0 <= self.skip_first_rows < 1, f"skip_first_rows must be in [0, 1), got {self.skip_first_rows}"),
                             (self.kl_weight < 0, f"kl_weight must be >= 0, got {self.kl_weight}"),
                             (not 0 < self.kl_rows <= 1, f"kl_rows must be in (0, 1], got {self.kl_rows}")):
            if bad:
                raise ValueError(message)
        if self.dense_attention not in ("sdpa", "flex_attention"):
            raise ValueError(f"dense_attention must be sdpa or flex_attention, got {self.dense_attention!r}")
        if self.gates and self.dense_attention != "sdpa":
            raise ValueError("dense_attention chooses the attention of a gates=false run; with gates the attention "
                             "is the gates' sparse one")
        if self.dense_attention == "flex_attention" and not torch.cuda.is_available():
            raise ValueError("dense_attention=flex_attention trains on CUDA only (flex attention has no CPU backward)")
        if "cuda_graphs" in self.runtime:
            raise ValueError("runtime.cuda_graphs: use the cuda_graphs knob (graphs start after the density schedule; "
                             "from step 0 each new density would record again)")
        check_mixture(self.mixture, self.data)
        if self.gates_from is not None and not self.gates:
            raise ValueError("gates_from starts gates, gates=false trains none: drop one of them")
        if self.gates_from is not None and not Path(self.gates_from).expanduser().is_dir():
            raise ValueError(f"gates_from: no adapter folder at {self.gates_from}")
        self.configs()

    def configs(self) -> tuple[SeerFlexConfig, RuntimeOptions]:
        return SeerFlexConfig.from_dict(self.seerflex), RuntimeOptions(**{"check_finite": False, **self.runtime,
                                                                           "dense_below": 0})

    def graphs_from(self, device: torch.device, sharded: bool) -> int | None:
        """The first step whose sparse layers replay CUDA graphs (None: never): one recording per layer needs a
        fixed density (a new top-k bound would record again each step) and parameters that stay where they are."""
        if not (self.gates and self.cuda_graphs and device.type == "cuda" and not sharded):
            return None
        return self.schedule_steps

    def density_at(self, step: int) -> float:
        """Linear from dense to ``density`` over ``schedule_steps`` steps, then ``density``."""
        if self.schedule_steps == 0:
            return self.density
        return 1.0 - (1.0 - self.density) * min(1.0, step / self.schedule_steps)


def sparse_kernel(config: SeerFlexConfig, runtime: RuntimeOptions, accelerator: Any) -> str:
    """The kernel the sparse layers' training calls resolve to ("flash" or "triton"), for the run's record: which
    one ran is otherwise known only from the environment (an FA4 install that did not load runs Triton)."""
    device = accelerator.device
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    return kernel_backend(runtime.backend, device, compiled=compiles(runtime.compile, device), plain_mask=True,
                          dtype=dtype, block_size=(config.q_block_size, config.block_size), backward=True)


def with_lora(model: Any, lora: dict[str, Any]) -> Any:
    """``model`` with peft LoRA adapters on the target modules (each must exist)."""
    from peft import LoraConfig, get_peft_model

    settings = LORA | lora
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(settings["target_modules"]) - names)
    if missing:
        raise ValueError(f"LoRA target module(s) {missing} do not exist in {type(model).__name__}; its linear layers "
                         f"include {sorted(n for n in names if n.endswith('_proj'))}")
    return get_peft_model(model, LoraConfig(r=settings["r"], lora_alpha=settings["alpha"],
                                            lora_dropout=settings["dropout"],
                                            target_modules=list(settings["target_modules"])))


def train(recipe: FinetuneRecipe, model: Any = None, tokenizer: Any = None) -> Path:
    """Run (or resume) a fine-tune; returns the export folder."""
    from transformers import get_cosine_schedule_with_warmup

    from seerflex.hf.model import SeerFlexModel, get_seerflex_model

    accelerator, model, tokenizer = start_training(recipe, model, tokenizer, frozen=False, sharded=True)
    if recipe.rope_factor > 1:
        extend_context(model, recipe.rope_factor, recipe.rope_type)
    base = with_lora(model, recipe.lora) if recipe.trainable == "lora" else model
    config, runtime = recipe.configs()
    if not recipe.gates:
        hf_model_of(base).set_attn_implementation(recipe.dense_attention)
        wrapped = base
    elif recipe.gates_from:
        wrapped = SeerFlexModel.from_pretrained(base, recipe.gates_from, is_trainable=True, runtime=runtime)
        config = wrapped.peft_config[wrapped.active_adapter]
    else:
        wrapped = get_seerflex_model(base, config, runtime=runtime)
    for name, p in hf_model_of(base).named_parameters():  # the wrapper (or peft) froze the model: pick what trains
        if "seerflex" not in name:
            p.requires_grad_(recipe.trainable == "full" or "lora_" in name)
    params = {n: p for n, p in wrapped.named_parameters() if p.requires_grad}
    names = sorted(params, key=lambda n: "seerflex" in n)  # the optimizer's order: the model's part, then the gates
    adamw = torch.optim.AdamW([
        {"params": [params[n] for n in names if "seerflex" not in n], "lr": recipe.lr,
         "weight_decay": recipe.weight_decay},
        {"params": [params[n] for n in names if "seerflex" in n], "lr": recipe.gate_lr, "weight_decay": 0.0}])
    scheduler = get_cosine_schedule_with_warmup(adamw, recipe.warmup_steps, recipe.steps)
    pieces, epoch, counts = mixed_pieces(load_domains(recipe.data, recipe.text_field), tokenizer, recipe.seq_len,
                                         recipe.mixture, recipe.seed)
    data = data_fingerprint(pieces, epoch)
    out = Path(recipe.output_dir)
    ckpt_dir = out / "checkpoint"
    resumed = load_checkpoint(out, recipe.resume, recipe.overwrite,
                              lambda found, state, tensors: check_resumable(found, state, tensors, params, recipe,
                                                                            data))
    sharded = getattr(accelerator, "is_fsdp2", False)  # check_world let no other sharding through
    home = plain_copy(wrapped) if sharded and accelerator.is_main_process else None  # the export's, before sharding
    runner, optimizer = accelerator.prepare(wrapped, adamw)
    start = 0
    if resumed is not None:  # after prepare: FSDP's shards are taken from the whole tensors
        tensors, state = resumed
        restore_state(runner, adamw, names, tensors, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        del resumed, tensors  # the loaded copies: a full fine-tune's weights and moments
    metrics_file = open_run(accelerator, recipe, out, start, pieces=counts,
                            distributed=accelerator.distributed_type.value,
                            rope=getattr(hf_model_of(base).config, "rope_parameters", None),
                            kernel=sparse_kernel(config, runtime, accelerator) if recipe.gates else recipe.dense_attention)
    policy = config.policy.base_fields()
    gate_loss = GateLoss(recipe.target, recipe.skip_first_rows, recipe.kl_rows, recipe.seed)
    graphs_from = recipe.graphs_from(accelerator.device, sharded)
    last: dict[str, Any] = {}
    with (wrapped.gate_training(gate_loss) if recipe.gates else nullcontext()), \
            progress(transient=False, disable=not accelerator.is_main_process) as bar:
        task = bar.add_task("finetune", total=recipe.steps, completed=start, info="")
        for step in range(start, recipe.steps):
            tic = time.perf_counter()
            density = recipe.density_at(step) if recipe.gates else 1.0
            if recipe.gates:
                wrapped.set_policy(TopK(density=density, **policy))
                gate_loss.step = step
            if graphs_from is not None and step >= graphs_from:
                if not wrapped.runtime_options.cuda_graphs:  # the switch: the graphs' pool starts from what is free
                    wrapped.set_runtime(cuda_graphs=True)
                    torch.cuda.empty_cache()
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten
            ids = step_batch(accelerator, recipe, pieces, epoch, step)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            with (wrapped.track_sparsity() if recipe.gates else nullcontext([])) as stats, accelerator.autocast():
                lm = runner(input_ids=ids, labels=ids, use_cache=False).loss
            kl = gate_loss.total() if recipe.gates else torch.zeros((), device=lm.device)
            loss = lm + recipe.kl_weight * kl
            finite = torch.isfinite(loss.detach()).reshape(1).float()  # gathered: NCCL and gloo take floats
            if not bool(accelerator.gather(finite).all()):  # one host sync; every process stops, none hangs
                kept = f"the checkpoint in {ckpt_dir} is intact" if ckpt_dir.is_dir() else "no checkpoint was written yet"
                raise ValueError(f"step {step + 1}: the loss is not finite on some process (here: LM {float(lm):.4g}, "
                                 f"gate KL {float(kl):.4g}); nothing of this step was applied and {kept}; lower lr / "
                                 "gate_lr or check the data")
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tic
            achieved = sum((s for _, s in stats[1:]), stats[0][1]).mean_density if stats else 1.0
            last = {"step": step + 1, "loss": float(loss.detach()), "lm_loss": float(lm.detach()),
                    "gate_kl": float(kl.detach()), "density": density, "achieved_density": achieved,
                    "lr": scheduler.get_last_lr()[0], "step_s": seconds,
                    "tokens_per_s": ids.numel() * accelerator.num_processes / seconds,
                    "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
                    "reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None}
            bar.update(task, advance=1, info=f"lm {last['lm_loss']:.4f}  kl {last['gate_kl']:.4f}  "
                                                  f"density {achieved:.3f}")
            tensors, optim = gather_state(runner, adamw, names) if checkpoint_due(recipe, step + 1) else ({}, {})
            end_step(accelerator, recipe, metrics_file, last, lambda: checkpoint.save(
                ckpt_dir, tensors, {"step": step + 1, "optimizer": optim, "scheduler": scheduler.state_dict(),
                                    "recipe": asdict(recipe), "data": data}))
    accelerator.wait_for_everyone()
    export = out / "export"
    if sharded:  # every rank takes part in the gather
        whole = get_model_state_dict(runner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if home is not None:
            home.load_state_dict(whole)
        del whole
    if accelerator.is_main_process:
        export_model(home if home is not None else accelerator.unwrap_model(runner), recipe, tokenizer, export)
        if last:
            print_table("fine-tune, last step", [k for k in last if last[k] is not None],
                        [[v for v in last.values() if v is not None]])
        console.print(f"exported to {export}: model/ (rope {recipe.rope_type} x{recipe.rope_factor})"
                      f"{', seerflex/ (gates)' if recipe.gates else ''}{', lora/' if recipe.trainable == 'lora' else ''}")
    return export


def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained tensors ``names`` (the optimizer's parameters, in its order) and the optimizer's state, whole and
    on the CPU, in one format for a plain, DDP or FSDP2-sharded ``model``: that of a one-process checkpoint
    (``optimizer.state_dict()``'s parameter ids), so a checkpoint resumes under any launch. Collective: every
    rank calls it, rank 0 gets the state, the others empty dicts."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    tensors = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    if not optim:
        return {}, {}
    ids = {name: i for i, name in enumerate(names)}
    return {n: tensors[n] for n in names}, {
        "state": {ids[n]: s for n, s in optim["state"].items()},
        "param_groups": [g | {"params": [ids[n] for n in g["params"]]} for g in optim["param_groups"]]}


def restore_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, names: list[str],
                  tensors: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """Load what ``gather_state`` gave (every rank holds it whole) into the prepared ``model`` and ``optimizer``:
    under FSDP each rank keeps its shard. Collective."""
    options = StateDictOptions(full_state_dict=True, strict=False)  # not strict: the frozen weights are not in it
    set_model_state_dict(model, tensors, options=options)
    set_optimizer_state_dict(model, optimizer, {
        "state": {names[i]: s for i, s in optim["state"].items()},
        "param_groups": [g | {"params": [names[i] for i in g["params"]]} for g in optim["param_groups"]]},
        options=options)
    params = [p for g in optimizer.param_groups for p in g["params"]]  # ``names``' order
    for i, p in enumerate(params):  # torch's loader gives every parameter a placeholder state (step 1, zero
        if i not in optim["state"]:  # moments); one that had no gradient yet had none: keep it so, for exact resume
            optimizer.state.pop(p, None)


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` copied with uninitialised CPU parameters (tied ones stay tied): FSDP shards the model in place,
    so rank 0 keeps this plain twin to load the weights gathered at the end into and export them."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="cpu"), p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def check_resumable(found: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor],
                    params: dict[str, torch.nn.Parameter], recipe: FinetuneRecipe, data: str) -> None:
    """Refuse a checkpoint of another model, rope, trainable part or gate config; warn when the data order or
    the schedule changed since it was made."""
    saved, now = state.get("recipe", {}), asdict(recipe)
    saved = {k: getattr(FinetuneRecipe, k, None) for k in ARCHITECTURE} | saved  # knobs newer than the checkpoint
    changed = [k for k in ARCHITECTURE if saved.get(k) != now[k]]
    if changed or set(tensors) != set(params):
        raise ValueError(f"the checkpoint in {found} is from another fine-tune config (differs in "
                         f"{', '.join(changed) or 'its trained tensors'}); resume with its recipe or use another "
                         "output_dir")
    moved = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in DATA_KEYS if saved.get(k) != now[k]]
    if moved:
        warn(f"resuming with changed settings (the data order or schedule differs from the run so far): "
             f"{'; '.join(moved)}")
    warn_if_other_data(found, state, data)


def export_model(wrapped: Any, recipe: FinetuneRecipe, tokenizer: Any, export: Path) -> None:
    """model/ (a plain transformers model, LoRA merged, rope scaling in its config), seerflex/ (the gates, when
    they trained), lora/ (the LoRA adapter alone, when LoRA trained)."""
    base = wrapped
    if recipe.gates:
        policy = wrapped.peft_config[wrapped.active_adapter].policy.base_fields()
        wrapped.set_policy(TopK(density=recipe.density, **policy))
        wrapped.save_pretrained(export / "seerflex")
        base = wrapped.unload()
    if recipe.trainable == "lora":
        base.save_pretrained(export / "lora")
        base = base.merge_and_unload()
    base.save_pretrained(export / "model")
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(export / "model")


def main(argv: list[str]) -> int:
    recipe = parse_recipe(FinetuneRecipe, argv, prog="seerflex finetune")
    if recipe is not None:
        train(recipe)
    return 0
