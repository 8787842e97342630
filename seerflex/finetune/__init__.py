"""Long-context fine-tuning with the gates in the loop: extend the context (YaRN), train the model (LoRA or
full) on the language-model loss through the gates' block-sparse attention, and the gates on their
distillation loss, in one pass (``seerflex finetune``)."""

from seerflex.finetune.context import extend_context
from seerflex.finetune.gate_loss import GateLoss

__all__ = ["GateLoss", "extend_context"]
