"""Self-distillation of gates: the frozen model's block attention map teaches the gates.

The training loop is the ``seerflex distill`` recipe (``seerflex.recipes.distill``); this package
holds what it is made of: the loss, the collector that scores gates during a dense forward,
data packing and atomic checkpoints.
"""
