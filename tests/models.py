"""Tiny random models and a character tokenizer: one factory per model family, shared by every test."""

from __future__ import annotations

import torch
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, LlamaConfig, MistralConfig,
                          PretrainedConfig, Qwen2Config, Qwen3Config)

COMMON = dict(vocab_size=128, hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, max_position_embeddings=1024)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
GEMMA = dict(layer_types=["sliding_attention", "full_attention"], sliding_window=64, query_pre_attn_scalar=32)
CONFIGS = {
    "llama": lambda **kw: LlamaConfig(**(COMMON | {"rope_parameters": LLAMA3} | kw)),
    "qwen2": lambda **kw: Qwen2Config(**(COMMON | kw)),
    "qwen3": lambda **kw: Qwen3Config(**(COMMON | kw)),
    "mistral": lambda **kw: MistralConfig(**(COMMON | {"sliding_window": 4096} | kw)),
    "gemma2": lambda **kw: Gemma2Config(**(COMMON | GEMMA | {"attn_logit_softcapping": 50.0,
                                                             "final_logit_softcapping": 30.0} | kw)),
    "gemma3": lambda **kw: Gemma3TextConfig(**(COMMON | GEMMA | kw)),
}
FAMILIES = list(CONFIGS)
# the small Llama the recipe tests run: 2 layers, 4/2 heads of 16, a 100-token vocabulary
SMALL_LLAMA = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, rope_parameters=None)


def tiny_config(family: str, **overrides) -> PretrainedConfig:
    return CONFIGS[family](**overrides)


def tiny_model(family: str = "llama", *, seed: int = 0, sharp: bool = True, **overrides) -> torch.nn.Module:
    """A random model of ``family`` in eval mode. ``sharp``: Q/K weights N(0, 0.2) instead of the
    default init, so attention is peaked enough for sparsity to change the output."""
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    impl = "eager" if family == "gemma2" else "sdpa"  # Gemma-2 soft-caps logits: SDPA refuses it
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()
    if sharp:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight")):
                    p.normal_(0, 0.2)
    return model


def small_llama(seed: int = 0) -> torch.nn.Module:
    """The recipe tests' model: default init, plain RoPE."""
    return tiny_model("llama", seed=seed, sharp=False, **SMALL_LLAMA)


class CharTokenizer:
    """Characters to ids 1..90 (0 is EOS); ``decode`` maps ids back to digits, enough for passkeys."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % 90 for c in text]}

    def decode(self, ids):
        return "".join(chr(48 + (int(i) - 1) % 10) if int(i) else "" for i in ids)
