"""The fine-tune's host overhead, three experimental levers side by side (benchmarks only; the library has none).

The 32k fine-tune step's forward is host-bound (benchmarks/NOTES.md v14/v15): each sparse layer's call costs
~3.5 ms of Python, dynamo guards, AOTAutograd wrappers and ~30 kernel launches. Levers, each one patch:

* ``cudagraphs``: the fused layer graph (``seerflex.plan.attend``) compiled with ``mode="reduce-overhead"``
  (inductor's CUDA-graph trees): its kernels replay as one graph; ``cudagraph_mark_step_begin`` per step.
* ``skip_guards``: after ``WARM`` steps, ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``: dynamo
  stops evaluating guards other than those that tell its cached graphs apart (unsafe when a new variant would be
  needed, so only for a run whose shapes and density no longer change: no schedule).
* ``layers``: every decoder layer compiled (``nn.Module.compile``, as torchtune does), so norms, MLP and LoRA
  stop launching eagerly and the attention call runs inside the layer's graph(s).

    python benchmarks/finetune_variant.py --variant cudagraphs,skip_guards recipes/finetune_smollm2.yaml key=value ...
"""

from __future__ import annotations

import sys

import torch

WARM = 3


def apply_variant(names: list[str]) -> None:
    """Patch seerflex (and the fine-tune recipe) for the named levers."""
    import seerflex.compile as compile_module
    import seerflex.plan as plan
    import seerflex.recipes.finetune as finetune
    from seerflex.hf.families import hf_model_of

    unknown = set(names) - {"cudagraphs", "skip_guards", "layers", "plain"}
    if unknown:
        raise SystemExit(f"finetune_variant: unknown variant(s) {sorted(unknown)}")
    if "cudagraphs" in names:
        original = compile_module._compile.__wrapped__

        def with_graphs(fn, dynamic):
            if fn is plan.attend:
                return torch.compile(fn, dynamic=dynamic, mode="reduce-overhead")
            return original(fn, dynamic)

        compile_module._compile = __import__("functools").cache(with_graphs)
    if "layers" in names:
        lora = finetune.with_lora

        def compiled_layers(model, settings):
            peft_model = lora(model, settings)
            for layer in hf_model_of(peft_model).model.layers:  # the decoder stack of a causal LM
                layer.compile()
            return peft_model

        finetune.with_lora = compiled_layers
    batch = finetune.step_batch

    def each_step(accelerator, recipe, pieces, step):
        if "cudagraphs" in names:
            torch.compiler.cudagraph_mark_step_begin()
        if "skip_guards" in names and step == WARM:
            torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
        return batch(accelerator, recipe, pieces, step)

    finetune.step_batch = each_step


def main(argv: list[str]) -> int:
    i = argv.index("--variant")
    names = argv[i + 1].split(",")
    apply_variant(names)
    from seerflex.recipes import finetune

    code = finetune.main(argv[:i] + argv[i + 2:])
    from torch._dynamo.utils import counters  # how often dynamo split or recompiled the compiled code
    print("graph breaks:", sum(counters["graph_break"].values()), dict(counters["graph_break"].most_common(8)))
    print("recompiles:", dict(counters["recompiles"].most_common(8)) if "recompiles" in counters else {})
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
