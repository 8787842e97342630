"""``seerflex convert SOURCE OUTPUT``: published SeerAttention gates -> a seerflex adapter folder."""

from __future__ import annotations

from dataclasses import dataclass

from seerflex.console import console
from seerflex.hf.loading import load_checkpoint
from seerflex.recipes.config import knob, parse_recipe


@dataclass
class ConvertArgs:
    """Convert SeerAttention AttnGates (config.json + attn_gate_weights.pth, folder or hub id) into a
    seerflex adapter (adapter_config.json + adapter_model.safetensors)."""

    source: str = knob(None, "folder or Hugging Face Hub id of the original gates")
    output: str = knob(None, "folder to write the seerflex adapter to")
    revision: str | None = knob(None, "hub revision of the source")


def main(argv: list[str]) -> int:
    args = parse_recipe(ConvertArgs, argv, prog="seerflex convert", positional=("source", "output"))
    if args is None:
        return 0
    if not args.source or not args.output:
        raise ValueError("seerflex convert needs SOURCE and OUTPUT (usage: seerflex convert SOURCE OUTPUT)")
    checkpoint = load_checkpoint(args.source, revision=args.revision)
    checkpoint.save(args.output)
    meta, cfg = checkpoint.meta, checkpoint.config
    console.print(f"wrote {args.output}: {len(meta['gated_layers'])} layers, gate {cfg.gate_type}, block "
                  f"{cfg.block_size}, hidden {cfg.gate_hidden_size}, policy {cfg.policy.to_dict()}, base model "
                  f"{meta['base_model_name_or_path']}", markup=False, highlight=False)
    return 0
