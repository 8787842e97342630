"""Self-distillation of gates: the frozen model's block attention map teaches the gates."""
