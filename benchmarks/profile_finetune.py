"""Where a fine-tune step's GPU time goes: runs ``seerflex finetune`` with the given keys and records the torch
profiler over its last two steps (after compilation and autotuning), as a kernel table sorted by GPU time, and
on CUDA every host sync in those steps by source line (``torch.cuda.set_sync_debug_mode``): each one stops the
CPU from queuing work ahead of the GPU.

    python benchmarks/profile_finetune.py --out prof.txt recipes/finetune_smollm2.yaml steps=8 schedule_steps=0 ...
"""

from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule

import seerflex.attention as attention
import seerflex.hf.attention_interface as interface
import seerflex.recipes.finetune as finetune
from seerflex.finetune.gate_loss import GateLoss
from seerflex.gates import AttnGate
from seerflex.policies import Policy
from seerflex.recipes.config import parse_recipe

# named ranges around the sparse layer's parts: the table then shows each part's host time and forward GPU time
RANGES = {"seerflex.layer": (interface, "seerflex_attention"), "seerflex.gate_loss": (GateLoss, "__call__"),
          "seerflex.gate": (AttnGate, "score_blocks"), "seerflex.policy": (Policy, "select"),
          "seerflex.block_mask": (attention, "block_mask_for"), "seerflex.flex": (attention, "sparse_attention"),
          "seerflex.planned_block_mask": (attention, "planned_block_mask"),
          "seerflex.planned_attention": (attention, "planned_attention")}  # CUDA training: the fused route


def with_ranges() -> None:
    """Wrap each part in a ``record_function`` range (this script only; the library carries none)."""
    for name, (owner, attr) in RANGES.items():
        fn = getattr(owner, attr)

        def wrapped(*args, _fn=fn, _name=name, **kwargs):
            with record_function(_name):
                return _fn(*args, **kwargs)

        setattr(owner, attr, wrapped)


def main(argv: list[str]) -> None:
    out = Path(argv[argv.index("--out") + 1])
    argv = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    recipe = parse_recipe(finetune.FinetuneRecipe, argv, prog="profile_finetune")
    with_ranges()
    if recipe.steps < 3:
        raise SystemExit("profile_finetune: needs steps >= 3 (the last two are profiled)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, schedule=schedule(wait=recipe.steps - 2, warmup=0, active=2)) as prof, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        original = finetune.end_step

        def end_step_then_profile(accelerator, recipe, metrics, row, save):
            original(accelerator, recipe, metrics, row, save)
            prof.step()
            if torch.cuda.is_available():  # warn on every host sync of the profiled steps
                torch.cuda.set_sync_debug_mode("warn" if row["step"] >= recipe.steps - 2 else 0)

        finetune.end_step = end_step_then_profile  # the recipe's own loop, a profiler tick after each step
        try:
            finetune.train(recipe)
        finally:
            finetune.end_step = original
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode(0)
    syncs = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    for w in caught:  # the run's own warnings, shown as they would have been
        if "synchroniz" not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    averages = prof.key_averages()
    table = averages.table(sort_by=sort, row_limit=45, max_name_column_width=90)
    # the CPU-side range (its device time = the kernels its ops launched), not the GPU annotation (a time span)
    ranges = [e for e in averages if e.key.startswith("seerflex.") and e.device_type == DeviceType.CPU]
    range_lines = "\n".join(f"{e.key:28s} calls {e.count:5d}  host {e.cpu_time_total / 1e3:9.2f} ms  "
                             f"device {e.device_time_total / 1e3:9.2f} ms" for e in ranges)
    out.parent.mkdir(parents=True, exist_ok=True)
    sync_lines = "\n".join(f"{count // 2:6d}  {where}" for where, count in syncs.most_common())
    report = (f"seerflex finetune {' '.join(argv)}\nlast 2 steps, times summed over both\n{table}\n"
              f"seerflex ranges (both steps; host = CPU time inside, device = forward kernels they launched):\n"
              f"{range_lines}\nhost syncs per step, by source line:\n{sync_lines or '(none recorded)'}\n")
    out.write_text(report)
    prof.export_chrome_trace(str(out.with_suffix(".trace.json")))
    print(report[-3000:])


if __name__ == "__main__":
    main(sys.argv[1:])
