"""Hugging Face integration: sparse prefill for transformers causal LMs, gates handled like PEFT adapters."""

from seerflex.hf.adapter_io import GateCheckpoint
from seerflex.hf.families import FAMILIES, inspect_model
from seerflex.hf.loading import load_checkpoint
from seerflex.hf.model import SeerFlexModel, get_seerflex_model

__all__ = ["FAMILIES", "GateCheckpoint", "SeerFlexModel", "get_seerflex_model", "inspect_model", "load_checkpoint"]
