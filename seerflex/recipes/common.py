"""Small pieces every recipe shares: device facts for result files, JSON output, rich tables.

Recipes sit on top of the library: they import it, it never imports them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.table import Table

from seerflex.console import console, warn
from seerflex.distill import checkpoint
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


def check_world(accelerator: Any) -> None:
    """Refuse launches whose runs would be wrong: a multi-process launch that accelerate runs as independent
    single processes (each would train and write the same run; torchrun on CPU without
    ``ACCELERATE_USE_CPU=true`` does that), and engines that shard parameters (FSDP, DeepSpeed), which replace the
    tensors the recipes checkpoint and export with shards (not supported yet: untested on multi-GPU machines)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise ValueError(f"launched as {launched} processes but accelerate runs {accelerator.num_processes}; on CPU "
                         "set ACCELERATE_USE_CPU=true (gloo DDP), on GPUs use accelerate launch --multi_gpu")
    engine = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if engine in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ValueError(f"{engine} is not supported yet (its sharded parameters would leave the checkpoints and the "
                         "export with stale tensors); run on one device or under DDP: accelerate launch --multi_gpu")


def resume_step(out: Path, resume: bool, overwrite: bool, params: dict[str, torch.nn.Parameter], optimizer: Any,
                scheduler: Any, check: Callable[[Path, dict[str, Any], dict[str, torch.Tensor]], None]) -> int:
    """The step a training run starts at: 0, or the step of ``out/checkpoint`` after ``check(folder, state,
    tensors)`` accepted it and the trained tensors, optimizer and scheduler were restored from it. A run already
    in ``out`` is never overwritten unless ``overwrite`` says so."""
    ckpt_dir = out / "checkpoint"
    found = checkpoint.latest(ckpt_dir)
    if not resume and not overwrite and (found or (out / "metrics.jsonl").is_file()):
        raise ValueError(f"{out} already holds a run; resume=true continues it, overwrite=true starts it over, "
                         "or choose another output_dir")
    if not resume:
        return 0
    if not found:
        warn(f"resume=true, but {ckpt_dir} holds no checkpoint: starting at step 0")
        return 0
    tensors, state = checkpoint.load(found)
    check(found, state, tensors)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    console.log(f"resumed from {found} at step {state['step']}")
    return state["step"]
