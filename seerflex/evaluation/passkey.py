"""Retrieval: a passkey (a number) or a needle (a fact) planted at a depth of a long filler text,
asked for at the end.

Perplexity flatters local-only attention; retrieval exposes it (FIELD_NOTES §4: sink + local
window scored 0/12 where dense scored 9/12).
"""

from __future__ import annotations

import random
from typing import Any

import torch

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
QUESTION = "\nWhat is the pass key? The pass key is"


NEEDLES = [  # (fact, question, answer the reply must contain)
    ("The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
     "\nWhat is the best thing to do in San Francisco? The best thing to do in San Francisco is", "sandwich"),
    ("The secret ingredient of Mrs. Bates's famous pie is a spoonful of lavender honey.",
     "\nWhat is the secret ingredient of Mrs. Bates's pie? The secret ingredient is", "lavender"),
    ("The old lighthouse keeper painted his boat bright orange so the fishermen could always find him.",
     "\nWhat colour did the lighthouse keeper paint his boat? He painted it", "orange"),
]


def passkey_prompt(tokenizer: Any, length: int, depth: float, key: int) -> torch.Tensor:
    """Token ids of about ``length`` tokens with the key sentence at ``depth`` (0 = start, 1 = end)."""
    return planted_prompt(tokenizer, length, depth, f" The pass key is {key}. Remember it. {key} is the pass key. ",
                          QUESTION)


def planted_prompt(tokenizer: Any, length: int, depth: float, needle: str, question: str) -> torch.Tensor:
    """Filler of about ``length`` tokens with ``needle`` at ``depth``, then ``question``."""
    fixed = len(tokenizer(needle + question)["input_ids"])
    unit = tokenizer(FILLER)["input_ids"]
    filler_tokens = (unit * (length // max(1, len(unit)) + 1))[: max(0, length - fixed)]
    cut = int(len(filler_tokens) * depth)
    text = tokenizer.decode(filler_tokens[:cut]) + " " + needle + " " + tokenizer.decode(filler_tokens[cut:]) + question
    return torch.tensor(tokenizer(text)["input_ids"])


@torch.no_grad()
def answer(model: Any, tokenizer: Any, ids: torch.Tensor, new_tokens: int) -> str:
    ids = ids[None].to(model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:])


def passkey_trial(model: Any, tokenizer: Any, length: int, depth: float, rng: random.Random) -> bool:
    key = rng.randint(10000, 99999)
    return str(key) in answer(model, tokenizer, passkey_prompt(tokenizer, length, depth, key), 8)


def needle_trial(model: Any, tokenizer: Any, length: int, depth: float, rng: random.Random) -> bool:
    fact, question, expected = rng.choice(NEEDLES)
    reply = answer(model, tokenizer, planted_prompt(tokenizer, length, depth, fact, question), 16)
    return expected.lower() in reply.lower()
