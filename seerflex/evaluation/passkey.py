"""Passkey retrieval: a number planted at a depth of a long filler text, asked for at the end.

Perplexity flatters local-only attention; retrieval exposes it (FIELD_NOTES §4: sink + local
window scored 0/12 where dense scored 9/12).
"""

from __future__ import annotations

import random
from typing import Any

import torch

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_prompt(tokenizer: Any, length: int, depth: float, key: int) -> torch.Tensor:
    """Token ids of about ``length`` tokens with the key sentence at ``depth`` (0 = start, 1 = end)."""
    needle = f" The pass key is {key}. Remember it. {key} is the pass key. "
    fixed = len(tokenizer(needle + QUESTION)["input_ids"])
    unit = tokenizer(FILLER)["input_ids"]
    filler_tokens = (unit * (length // max(1, len(unit)) + 1))[: max(0, length - fixed)]
    cut = int(len(filler_tokens) * depth)
    text = tokenizer.decode(filler_tokens[:cut]) + needle + tokenizer.decode(filler_tokens[cut:]) + QUESTION
    return torch.tensor(tokenizer(text)["input_ids"])


@torch.no_grad()
def passkey_trial(model: Any, tokenizer: Any, length: int, depth: float, rng: random.Random) -> bool:
    key = rng.randint(10000, 99999)
    ids = passkey_prompt(tokenizer, length, depth, key)[None].to(model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    return str(key) in tokenizer.decode(out[0, ids.shape[1]:])
