"""Original SeerAttention gate checkpoints: import, scores against the original math, convert."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from seerflex import SeerFlexModel, Threshold, TopK
from seerflex.cli import main as cli_main
from seerflex.hf.loading import load_checkpoint
from models import LLAMA3

BASE = dict(vocab_size=128, hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024)  # head_dim 32


# ---------------------------------------------------------------- the original gate math, written out here
def original_pool(x: torch.Tensor, kind: str, bs: int) -> torch.Tensor:
    """x [B, S, H, D] pooled over S in blocks (ceil mode), as the original's *_pool3d calls do."""
    kw = dict(kernel_size=[bs, 1, 1], stride=[bs, 1, 1], ceil_mode=True)
    if kind == "max":
        return F.max_pool3d(x, **kw)
    if kind == "min":
        return -F.max_pool3d(-x, **kw)
    return F.avg_pool3d(x, **kw)


def multi_head_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [B, n, H', C] @ weight [H, C, hid] per head; fewer input heads are repeated (repeat_kv) first."""
    if x.shape[2] < weight.shape[0]:
        x = x.repeat_interleave(weight.shape[0] // x.shape[2], dim=2)
    return torch.einsum("bshi,hio->bsho", x, weight)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def original_scores(q, k, weights, q_pools, k_pools, bs, hidden, base_config) -> torch.Tensor:
    """Block logits [B, Hq, n, n] (-inf above the diagonal) for q [B,S,Hq,D], k [B,S,Hkv,D]."""
    qb = torch.cat([original_pool(q, p, bs) for p in q_pools], dim=-1)
    if "q" in weights:
        qb = multi_head_linear(qb, weights["q"])
    kb = multi_head_linear(torch.cat([original_pool(k, p, bs) for p in k_pools], dim=-1), weights["k"])
    n = qb.shape[1]
    rope = base_config.rope_parameters  # the base model's rope, with head size = gate hidden size
    if rope.get("rope_type", "default") == "default":
        inv_freq, scaling = 1.0 / rope["rope_theta"] ** (torch.arange(0, hidden, 2).double() / hidden), 1.0
    else:
        block_cfg = LlamaConfig(hidden_size=2 * hidden, num_attention_heads=2, head_dim=hidden, rope_parameters=rope,
                                max_position_embeddings=base_config.max_position_embeddings)
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](block_cfg, "cpu")
    pos = torch.arange(0, n * bs, bs).double()  # position_ids[:, 0::block_size]
    freqs = torch.cat([pos[:, None] * inv_freq.double()[None]] * 2, dim=-1)
    cos, sin = (freqs.cos() * scaling)[None, :, None], (freqs.sin() * scaling)[None, :, None]
    qb, kb = qb * cos + rotate_half(qb) * sin, kb * cos + rotate_half(kb) * sin
    qb, kb = qb.transpose(1, 2), kb.transpose(1, 2)
    kb = kb.repeat_interleave(qb.shape[1] // kb.shape[1], dim=1)
    logits = qb @ kb.transpose(-1, -2) * hidden ** -0.5
    return logits.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))


# ---------------------------------------------------------------- synthetic published checkpoints
def write_original(folder, base_config, gate_type, hidden, *, q_projected, method="nz_ratio", dtype=torch.float32):
    folder.mkdir(parents=True, exist_ok=True)
    hq, hkv, d = base_config.num_attention_heads, base_config.num_key_value_heads, 32
    q_pools, k_pools = gate_type[1:].split("_K")[0], gate_type.split("_K")[1]
    nq, nk = (len(p) // 3 for p in (q_pools, k_pools))
    weights = OrderedDict()
    for i in range(base_config.num_hidden_layers):
        prefix = f"model.layers.{i}.self_attn.attn_gate"
        if q_projected:  # the original then projects K per KV head
            weights[f"{prefix}.mask_linear_q.weight"] = torch.randn(hq, nq * d, hidden, dtype=dtype) * 0.3
            weights[f"{prefix}.mask_linear_k.weight"] = torch.randn(hkv, nk * d, hidden, dtype=dtype) * 0.3
        else:
            weights[f"{prefix}.mask_linear_k.weight"] = torch.randn(hq, nk * d, hidden, dtype=dtype) * 0.3
    torch.save(weights, folder / "attn_gate_weights.pth")
    cfg = base_config.to_dict() | {
        "base_model": "example/tiny-base", "seerattn_gate_type": gate_type, "seerattn_gate_block_size": 32,
        "seerattn_gate_hidden_size": hidden, "seerattn_sparsity_method": method, "seerattn_threshold": 5e-3,
        "seerattn_nz_ratio": 0.3, "seerattn_last_block_dense": True, "seerattn_gate_force_double": False}
    (folder / "config.json").write_text(json.dumps(cfg))
    return weights


def pools(name: str) -> tuple[list[str], list[str]]:
    q, k = name[1:].split("_K")
    return [q[i:i + 3] for i in range(0, len(q), 3)], [k[i:i + 3] for i in range(0, len(k), 3)]


@pytest.mark.parametrize(("family", "gate_type", "hidden", "q_projected", "s"), [
    ("llama", "Qavg_Kmaxminavg", 32, False, 200),   # published default: hidden == head_dim, only K projected
    ("llama", "Qavg_Kmaxminavg", 64, True, 161),    # Q projected: the original's K map is per KV head
    ("qwen2", "Qmaxavg_Kmaxmin", 48, True, 96),
])
def test_imported_gates_score_like_the_original(family, gate_type, hidden, q_projected, s, tmp_path):
    base_config = (LlamaConfig(**BASE, rope_parameters=LLAMA3) if family == "llama" else Qwen2Config(**BASE))
    weights = write_original(tmp_path / "orig", base_config, gate_type, hidden, q_projected=q_projected)
    model = AutoModelForCausalLM.from_config(base_config).eval()
    sm = SeerFlexModel.from_pretrained(model, tmp_path / "orig")
    assert sm._adapter_meta["default"]["base_model_name_or_path"] == "example/tiny-base"
    q, k = torch.randn(2, s, 4, 32), torch.randn(2, s, 2, 32)  # the original's [B, S, H, D]
    q_pools, k_pools = pools(gate_type)
    for state in sm._states:
        prefix = f"model.layers.{state.layer_idx}.self_attn.attn_gate.mask_linear_"
        layer_weights = {s: weights[f"{prefix}{s}.weight"] for s in "qk" if f"{prefix}{s}.weight" in weights}
        ref = original_scores(q.double(), k.double(), {n: w.double() for n, w in layer_weights.items()},
                              q_pools, k_pools, 32, hidden, base_config)
        gate = state.active().gate
        ours = gate(q.transpose(1, 2), k.transpose(1, 2))  # float32, as it runs
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)
        exact = gate.double()(q.transpose(1, 2).double(), k.transpose(1, 2).double()).double()  # float64 math
        tol = 1e-4 if family == "llama" else 1e-6  # transformers computes llama3 frequencies in float32
        torch.testing.assert_close(exact, ref, rtol=tol, atol=tol)
        torch.testing.assert_close(exact.softmax(-1), ref.softmax(-1), rtol=tol, atol=tol)


def test_policies_map_and_convert_round_trips(tmp_path, capsys):
    base_config = LlamaConfig(**BASE, rope_parameters=LLAMA3)
    write_original(tmp_path / "orig", base_config, "Qavg_Kmaxminavg", 32, q_projected=False, dtype=torch.bfloat16)
    assert load_checkpoint(tmp_path / "orig").config.policy == TopK.original(0.3)
    write_original(tmp_path / "thr", base_config, "Qavg_Kmaxminavg", 32, q_projected=False, method="threshold")
    assert load_checkpoint(tmp_path / "thr").config.policy == Threshold(threshold=5e-3, sink=0, local=0, dense_last_rows=0)

    assert cli_main(["convert", str(tmp_path / "orig"), str(tmp_path / "conv")]) == 0
    assert "2 layers" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "conv" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "SEERFLEX" and cfg["base_model_name_or_path"] == "example/tiny-base"
    model = AutoModelForCausalLM.from_config(base_config).eval()
    direct = SeerFlexModel.from_pretrained(model, tmp_path / "orig")
    ids = torch.randint(0, 128, (1, 150))
    with torch.no_grad():
        expected = direct(input_ids=ids).logits
    converted = SeerFlexModel.from_pretrained(direct.unload(), tmp_path / "conv")
    for a, b in zip(direct._gate_tensors("default").values(), converted._gate_tensors("default").values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, expected)


class Payload:
    """Stands for arbitrary code a pickle could run on load."""


def test_rejects_pickles_and_foreign_layouts(tmp_path):
    base_config = LlamaConfig(**BASE)
    write_original(tmp_path / "evil", base_config, "Qavg_Kmaxminavg", 32, q_projected=False)
    torch.save({"payload": Payload(), "w": torch.zeros(1)}, tmp_path / "evil" / "attn_gate_weights.pth")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_checkpoint(tmp_path / "evil")
    write_original(tmp_path / "decode", base_config, "Qavg_Kmaxminavg", 32, q_projected=False)
    torch.save({"model.layers.0.self_attn.attn_gate.k_proj.weight": torch.zeros(2)},
               tmp_path / "decode" / "attn_gate_weights.pth")
    with pytest.raises(ValueError, match="original key layout"):
        load_checkpoint(tmp_path / "decode")
    write_original(tmp_path / "wrong", base_config, "Qavg_Kmaxminavg", 64, q_projected=False)  # needs a Q map
    with pytest.raises(ValueError, match=r"Q is not projected, so gate_hidden_size \(64\)"):
        load_checkpoint(tmp_path / "wrong")
