"""The fine-tune's host overhead: levers tried side by side (benchmarks only; what worked moved into the library).

The 32k fine-tune step's forward is host-bound (benchmarks/NOTES.md v14/v15): each sparse layer's call costs
~3.5 ms of Python, dynamo guards, AOTAutograd wrappers and ~30 kernel launches. Levers:

* ``plain``: the recipe without CUDA graphs (``cuda_graphs=false``), the v15 route.
* ``cudagraphs``: the fused layer graph replayed as CUDA graphs (``cuda_graphs=true``; was a patch here, measured
  1.68-1.70x dense flex vs 1.34-1.47x plain on the H200, NOTES v16, now the recipe's default).
* ``skip_guards``: after ``WARM`` steps, ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``: dynamo
  stops evaluating guards other than those that tell its cached graphs apart (unsafe when a new variant would be
  needed, so only for a run whose shapes and density no longer change: no schedule). Measured: noise.
* ``layers``: every decoder layer compiled (``nn.Module.compile``, as torchtune does), so norms, MLP and LoRA
  stop launching eagerly. Measured: a dynamo error at the ground truth's pinned row copy.

    python benchmarks/finetune_variant.py --variant cudagraphs,skip_guards recipes/finetune_smollm2.yaml key=value ...
"""

from __future__ import annotations

import sys

import torch

WARM = 3
KEYS = {"plain": ["cuda_graphs=false"], "cudagraphs": ["cuda_graphs=true"], "skip_guards": [], "layers": []}
# skip_guards and layers were measured without CUDA graphs: so they run unless cudagraphs is named with them


def apply_variant(names: list[str]) -> list[str]:
    """Patch the fine-tune recipe for the named levers; returns the recipe keys they add."""
    import seerflex.recipes.finetune as finetune
    from seerflex.hf.families import hf_model_of

    unknown = set(names) - set(KEYS)
    if unknown:
        raise SystemExit(f"finetune_variant: unknown variant(s) {sorted(unknown)}; known: {sorted(KEYS)}")
    if {"plain", "cudagraphs"} <= set(names):
        raise SystemExit("finetune_variant: plain and cudagraphs exclude each other")
    if "layers" in names:
        lora = finetune.with_lora

        def compiled_layers(model, settings):
            peft_model = lora(model, settings)
            for layer in hf_model_of(peft_model).model.layers:  # the decoder stack of a causal LM
                layer.compile()
            return peft_model

        finetune.with_lora = compiled_layers
    if "skip_guards" in names:
        batch = finetune.step_batch

        def each_step(accelerator, recipe, pieces, epoch, step):
            if step == WARM:
                torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
            return batch(accelerator, recipe, pieces, epoch, step)

        finetune.step_batch = each_step
    keys = [key for name in names for key in KEYS[name]]
    return keys or ["cuda_graphs=false"]


def main(argv: list[str]) -> int:
    i = argv.index("--variant")
    keys = apply_variant(argv[i + 1].split(","))
    from seerflex.recipes import finetune

    code = finetune.main(argv[:i] + argv[i + 2:] + keys)
    from torch._dynamo.utils import counters  # how often dynamo split or recompiled the compiled code
    print("graph breaks:", sum(counters["graph_break"].values()), dict(counters["graph_break"].most_common(8)))
    print("recompiles:", dict(counters["recompiles"].most_common(8)) if "recompiles" in counters else {})
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
