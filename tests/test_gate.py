"""AttnGate against an independent loop implementation of the SeerAttention gate math."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from seerflex import AttnGate, BlockLayout, RopeSpec
from seerflex.gates import GateType, block_pool

POOL = {"avg": lambda x: x.mean(0), "max": lambda x: x.amax(0), "min": lambda x: x.amin(0)}


def naive_pool(x: torch.Tensor, pools, bs: int, valid: torch.Tensor | None) -> torch.Tensor:
    """x [H, S, D] of one sequence -> [H, n, D * len(pools)], looping over blocks and real tokens."""
    h, s, d = x.shape
    out = torch.zeros(h, -(-s // bs), d * len(pools), dtype=torch.float64)
    for i in range(out.shape[1]):
        idx = [t for t in range(i * bs, min(s, (i + 1) * bs)) if valid is None or valid[t]]
        if idx:
            tokens = x[:, idx].double().transpose(0, 1)
            out[:, i] = torch.cat([POOL[p](tokens) for p in pools], -1)
    return out


def rope_rotate(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor, scale: float) -> torch.Tensor:
    """Interleaved-free (rotate-half) RoPE written out per frequency pair."""
    half = x.shape[-1] // 2
    ang = pos[:, None].double() * inv_freq[None].double()
    c, s = ang.cos() * scale, ang.sin() * scale
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], -1)


def original_gate_scores(gate: AttnGate, q, k, valid=None) -> torch.Tensor:
    """SeerAttention prefill gate math for one sequence (q [Hq,S,D], k [Hkv,S,D]), float64."""
    bs, qbs, hid = gate.block_size, gate.q_block_size, gate.hidden_size
    qb = naive_pool(q, gate.gate_type.q_pools, qbs, valid)
    kb = naive_pool(k, gate.gate_type.k_pools, bs, valid)
    kb = kb.repeat_interleave(q.shape[0] // k.shape[0], 0)
    if gate.q_weight is not None:
        qb = torch.stack([qb[h] @ gate.q_weight[h].double() for h in range(q.shape[0])])
    kb = torch.stack([kb[h] @ gate.k_weight[h].double() for h in range(q.shape[0])])
    nq, n = qb.shape[1], kb.shape[1]
    if gate.rope.rope_type == "default":
        inv = 1.0 / gate.rope.theta ** (torch.arange(0, hid, 2).double() / hid)
        scale = 1.0
    else:
        cfg = LlamaConfig(hidden_size=hid * 2, num_attention_heads=2, head_dim=hid, max_position_embeddings=131072,
                          rope_parameters={"rope_theta": gate.rope.theta, **gate.rope.scaling})
        inv, scale = ROPE_INIT_FUNCTIONS[gate.rope.rope_type](cfg, "cpu")
    qb, kb = rope_rotate(qb, torch.arange(nq) * qbs, inv, scale), rope_rotate(kb, torch.arange(n) * bs, inv, scale)
    logits = qb @ kb.transpose(-1, -2) / math.sqrt(hid)
    causal = torch.arange(n)[None, :] * bs < (torch.arange(nq)[:, None] + 1) * qbs  # key block starts by query block end
    return logits.masked_fill(~causal, float("-inf"))


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


@pytest.mark.parametrize(("gate_type", "hq", "hkv", "d", "hidden", "bs", "s", "scaling", "qbs"), [
    ("Qavg_Kmaxminavg", 8, 2, 64, 128, 64, 300, {}, None),
    ("Qavg_Kmaxminavg", 4, 4, 128, 128, 32, 97, LLAMA3, None),    # hidden == head_dim: Q not projected
    ("Qmaxavg_Kavg", 6, 3, 64, 64, 128, 257, YARN, None),
    ("Qmin_Kmax", 4, 1, 64, 32, 64, 64, {}, None),
    ("Qavg_Kmaxminavg", 8, 2, 64, 128, 64, 300, {}, 128),  # 128 x 64: Q pooled over 128, K over 64
    ("Qavg_Kmaxminavg", 4, 1, 64, 64, 32, 97, YARN, 128),
])
def test_gate_scores_match_original_math(gate_type, hq, hkv, d, hidden, bs, s, scaling, qbs):
    rope = RopeSpec(theta=500000.0 if scaling else 10000.0, scaling=scaling, max_position_embeddings=131072)
    gate = AttnGate(gate_type, hq, hkv, d, block_size=bs, q_block_size=qbs, hidden_size=hidden, rope=rope).double()
    assert (gate.q_weight is None) == (gate_type == "Qavg_Kmaxminavg" and hidden == d)
    q, k = torch.randn(2, hq, s, d, dtype=torch.float64), torch.randn(2, hkv, s, d, dtype=torch.float64)
    scores = gate(q, k)
    for b in range(2):
        ref = original_gate_scores(gate, q[b], k[b])
        torch.testing.assert_close(scores[b].double(), ref, rtol=1e-5, atol=1e-5)


def test_padded_batch_scores_each_sequence_as_if_alone():
    gate = AttnGate("Qavg_Kmaxminavg", 4, 2, 64, block_size=32, hidden_size=64)
    q, k = torch.randn(2, 4, 200, 64), torch.randn(2, 2, 200, 64)
    mask = torch.ones(2, 200, dtype=torch.long)
    mask[1, 150:] = 0  # right padding: sequence 1 has 150 real tokens
    scores = gate(q, k, BlockLayout.from_attention_mask(mask, 200, 32))
    alone = gate(q[1:, :, :150], k[1:, :, :150])
    n = alone.shape[-1]
    torch.testing.assert_close(scores[1, :, :n, :n], alone[0])
    assert torch.isinf(scores[1, :, :, n:]).all()  # padding-only key blocks are never selectable


def test_pooling_matches_loops_with_padding_and_short_last_block():
    x = torch.randn(2, 3, 77, 16)
    valid = torch.rand(2, 77) > 0.3
    valid[0, 64:] = False  # an all-padding block pools to zero
    pooled = block_pool(x, ("max", "min", "avg"), 32, valid)
    for b in range(2):
        torch.testing.assert_close(pooled[b].double(), naive_pool(x[b], ("max", "min", "avg"), 32, valid[b]))


@pytest.mark.parametrize("scaling", [{}, LLAMA3, YARN, {"rope_type": "linear", "factor": 2.0}])
def test_rope_frequencies_equal_transformers(scaling):
    spec = RopeSpec(theta=500000.0, scaling=scaling, max_position_embeddings=131072)
    cfg = LlamaConfig(hidden_size=256, num_attention_heads=2, head_dim=128, max_position_embeddings=131072,
                      rope_parameters={"rope_theta": 500000.0, "rope_type": "default", **scaling})
    kind = spec.rope_type
    inv, scale = (ROPE_INIT_FUNCTIONS[kind](cfg, "cpu") if kind != "default"
                  else (1.0 / 500000.0 ** (torch.arange(0, 128, 2).float() / 128), 1.0))
    ours, our_scale = spec.inv_freq(128)
    torch.testing.assert_close(ours.float(), inv.float())
    assert our_scale == pytest.approx(scale)
    assert RopeSpec.from_hf_config(cfg) == spec


def test_gate_type_names_round_trip_and_reject_garbage():
    assert GateType.parse("Qavg_Kmaxminavg") == GateType(("avg",), ("max", "min", "avg"))
    assert GateType.parse("Qminmax_Kavg").name == "Qminmax_Kavg"
    for bad in ("Qavg", "Q_Kmax", "Qavgavg_Kmax", "qavg_kmax"):
        with pytest.raises(ValueError, match="gate type"):
            GateType.parse(bad)
    with pytest.raises(ValueError, match="unsupported rope type"):
        RopeSpec(scaling={"rope_type": "dynamic", "factor": 2.0})


def test_gate_math_compiles_as_one_graph_with_the_same_logits():
    """GPU inference runs the gate compiled; it must trace without graph breaks and agree with eager."""
    from seerflex.gates.attn_gate import block_logits

    torch._dynamo.reset()  # earlier tests compiled the same function: start below the recompile limit
    gate = AttnGate("Qavgmax_Kmaxmin", 4, 2, 32, block_size=16, hidden_size=16)
    q, k = torch.randn(2, 4, 16 * 5 + 3, 32), torch.randn(2, 2, 16 * 5 + 3, 32)
    layout = BlockLayout(q.shape[2], 16)
    rope = gate.rope_tables(layout.seq_len, q.device, torch.float32)
    compiled = torch.compile(block_logits, fullgraph=True, backend="aot_eager")
    args = (q, k, gate.q_weight, gate.k_weight, rope, None, None, gate.gate_type.q_pools, gate.gate_type.k_pools,
            16, 16)
    assert torch.equal(compiled(*args), gate(q, k, layout))
