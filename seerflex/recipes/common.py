"""Small pieces every recipe shares: device facts for result files, JSON output, rich tables, and the frame of
the training recipes (distill, finetune): accelerate set-up, run folder, per-process batches, metrics and checkpoints.

Recipes sit on top of the library: they import it, it never imports them.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.table import Table

from seerflex.assets import load_model
from seerflex.console import console, warn
from seerflex.distill import checkpoint
from seerflex.distill.data import batch_indices
from seerflex.files import atomic_write


def environment() -> dict[str, Any]:
    """What a recorded result must say about where it was measured."""
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            import triton
            env["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return env


def write_json(path: str | Path, data: Any) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=str)))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in (columns[0],) else "left")
    for row in rows:
        table.add_row(*[f"{x:.4g}" if isinstance(x, float) else str(x) for x in row])
    console.print(table)


def start_training(recipe: Any, model: Any, tokenizer: Any, *, frozen: bool,
                   sharded: bool = False) -> tuple[Any, Any, Any]:
    """accelerate's Accelerator (bf16 autocast on CUDA when ``recipe.bf16``), the launch checked, the seed set, and
    ``recipe.model`` loaded once (main process first) unless a model is given. ``frozen``: under bf16 load bf16
    weights (a model that only runs); otherwise float32 weights (a model that trains). ``sharded``: the recipe
    gathers FSDP2's shards for its checkpoints and export, so an FSDP2 launch may run."""
    from accelerate import Accelerator

    use_bf16 = recipe.bf16 and torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no")
    check_world(accelerator, sharded=sharded)
    torch.manual_seed(recipe.seed)
    if model is None:
        with accelerator.main_process_first(), console.status(f"loading {recipe.model}"):  # once, not per rank
            model, tokenizer = load_model(recipe.model, torch.bfloat16 if use_bf16 and frozen else torch.float32)
    return accelerator, model, tokenizer


def open_run(accelerator: Any, recipe: Any, out: Path, start: int, **record: Any) -> Path:
    """The run's metrics file, cut back to step ``start`` (a resumed run writes each step once), and its
    recipe.json (recipe, environment, world size and ``record``), both on the main process."""
    metrics = out / "metrics.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        keep_metrics_until(metrics, start)
        write_json(out / "recipe.json", {"recipe": asdict(recipe), "environment": environment(),
                                         "world_size": accelerator.num_processes} | record)
    return metrics


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines after ``step`` (all of them for a fresh run): a resumed run writes each step once."""
    if not path.is_file():
        return

    def step_of(line: str) -> int | None:
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill
            return None

    lines = [line for line in path.read_text().splitlines() if (step_of(line) or step + 1) <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines)))


def step_batch(accelerator: Any, recipe: Any, pieces: torch.Tensor, epoch: torch.Tensor, step: int) -> torch.Tensor:
    """This process's share of step ``step``'s batch (``epoch``: piece ids, ``mixed_pieces``): the same sequences
    in the same order for any number of processes and on resume."""
    world, rank = accelerator.num_processes, accelerator.process_index
    chosen = batch_indices(step, recipe.batch_size * world, len(epoch), recipe.seed)
    return pieces[epoch[chosen[rank * recipe.batch_size:(rank + 1) * recipe.batch_size]]].to(accelerator.device)


def data_fingerprint(pieces: torch.Tensor, epoch: torch.Tensor) -> str:
    """The training tokens and one epoch's order, hashed: a checkpoint records it, so a resume on a rebuilt
    corpus or another mixture (whose batches differ from the run so far) is named, not silent."""
    digest = hashlib.sha256(pieces.contiguous().numpy().tobytes())
    digest.update(epoch.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def warn_if_other_data(found: Path, state: dict[str, Any], fingerprint: str) -> None:
    if state.get("data", fingerprint) != fingerprint:
        warn(f"the checkpoint in {found} was trained on other data (another corpus build or mixture): the batches "
             "from here on differ from the run so far")


def end_step(accelerator: Any, recipe: Any, metrics: Path, row: dict[str, Any], save: Callable[[], None]) -> None:
    """Append the step's metrics row; ``save()`` a checkpoint when ``checkpoint_due`` (main process)."""
    if accelerator.is_main_process:
        with open(metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        if checkpoint_due(recipe, row["step"]):
            save()


def checkpoint_due(recipe: Any, step: int) -> bool:
    """Whether step ``step`` (1-based) ends with a checkpoint: every ``recipe.checkpoint_every`` steps and the
    last one."""
    return step % recipe.checkpoint_every == 0 or step == recipe.steps


def check_world(accelerator: Any, *, sharded: bool = False) -> None:
    """Refuse launches whose runs would be wrong: a multi-process launch that accelerate runs as independent
    single processes (each would train and write the same run; torchrun on CPU without
    ``ACCELERATE_USE_CPU=true`` does that), FSDP asked for where accelerate runs something else (it never shards
    on a CPU), and engines that shard parameters (FSDP, DeepSpeed), which replace the tensors the recipes
    checkpoint and export with shards, unless the recipe gathers them (``sharded``; FSDP2 only: FSDP1's flat
    parameters are not gathered)."""
    from accelerate.utils import parse_flag_from_env

    engine = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if parse_flag_from_env("ACCELERATE_USE_FSDP") and engine != "FSDP":
        raise ValueError(f"FSDP was asked for (ACCELERATE_USE_FSDP) but accelerate runs {engine}: it shards only "
                         "GPU processes started by accelerate launch --use_fsdp, never on a CPU (there, "
                         "ACCELERATE_USE_CPU=true torchrun runs DDP over gloo)")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise ValueError(f"launched as {launched} processes but accelerate runs {accelerator.num_processes}; on CPU "
                         "set ACCELERATE_USE_CPU=true (gloo DDP), on GPUs use accelerate launch --multi_gpu")
    if engine == "FSDP" and sharded:
        if getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1) != 2:  # accelerate < 1.6 has FSDP1 only
            raise ValueError("FSDP1 is not supported (its flat parameters are not gathered into the checkpoints "
                             "and the export); launch FSDP2: accelerate launch --use_fsdp --fsdp_version 2")
    elif engine in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ValueError(f"{engine} is not supported yet (its sharded parameters would leave the checkpoints and the "
                         "export with stale tensors); run on one device or under DDP: accelerate launch --multi_gpu")


def resume_step(out: Path, resume: bool, overwrite: bool, params: dict[str, torch.nn.Parameter], optimizer: Any,
                scheduler: Any, check: Callable[[Path, dict[str, Any], dict[str, torch.Tensor]], None]) -> int:
    """The step a training run starts at: 0, or the step of ``load_checkpoint``'s checkpoint after the trained
    tensors, optimizer and scheduler were restored from it."""
    resumed = load_checkpoint(out, resume, overwrite, check)
    if resumed is None:
        return 0
    tensors, state = resumed
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"]


def load_checkpoint(out: Path, resume: bool, overwrite: bool,
                    check: Callable[[Path, dict[str, Any], dict[str, torch.Tensor]], None],
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and state of ``out/checkpoint`` to resume from, after ``check(folder, state, tensors)`` accepted
    them (the RNG states are restored), or None: a fresh start. A run already in ``out`` is never overwritten
    unless ``overwrite`` says so."""
    ckpt_dir = out / "checkpoint"
    found = checkpoint.latest(ckpt_dir)
    if not resume and not overwrite and (found or (out / "metrics.jsonl").is_file()):
        raise ValueError(f"{out} already holds a run; resume=true continues it, overwrite=true starts it over, "
                         "or choose another output_dir")
    if not resume:
        return None
    if not found:
        warn(f"resume=true, but {ckpt_dir} holds no checkpoint: starting at step 0")
        return None
    tensors, state = checkpoint.load(found)
    check(found, state, tensors)
    console.log(f"resumed from {found} at step {state['step']}")
    return tensors, state
