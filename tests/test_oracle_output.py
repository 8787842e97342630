"""The output oracle ranks key blocks by how far dropping them moves each query's output (float64 reference)."""

from __future__ import annotations

import pytest
import torch

from seerflex import BlockLayout, ScorerInputs
from seerflex.scorers import OracleOutputScores, OracleScores
import seerflex.scorers.oracle_output as oracle_output


def direct_costs(q, k, v, valid, bs, qbs, scale):
    """mean over each query block's real queries t of ||sum_{s in j} p_ts (v_s - o_t)||, by loops in float64."""
    b, hq, s, _ = q.shape
    group = hq // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    nq, nk = -(-s // qbs), -(-s // bs)
    out = torch.zeros(b, hq, nq, nk, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            for t in range(s):
                if not valid[bi, t]:
                    continue
                allowed = valid[bi, : t + 1]
                logits = (q[bi, h, t].double() @ k[bi, h, : t + 1].T) * scale
                p = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
                o = p @ v[bi, h, : t + 1]
                for j in range(-(-(t + 1) // bs)):
                    sl = slice(j * bs, min(t + 1, (j + 1) * bs))
                    out[bi, h, t // qbs, j] += (p[sl, None] * (v[bi, h, sl] - o)).sum(0).norm()
            counts = torch.nn.functional.pad(valid[bi].double(), (0, nq * qbs - s)).view(nq, qbs).sum(-1)
            out[bi, h] /= counts.clamp(min=1)[:, None]
    return out


@pytest.mark.parametrize("qbs", [16, 32])
def test_output_oracle_matches_a_float64_loop_with_gqa_padding_odd_length_and_chunks(qbs, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(oracle_output, "CHUNK_ELEMENTS", 1)  # one query block per chunk: the chunk seams are used
    q, k, v = torch.randn(2, 4, 75, 8).double(), torch.randn(2, 2, 75, 8).double(), torch.randn(2, 2, 75, 6).double()
    mask = torch.ones(2, 75, dtype=torch.bool)
    mask[1, :20] = False  # left padding
    mask[0, 70:] = False  # right padding
    layout = BlockLayout.from_attention_mask(mask.long(), 75, 16, qbs)
    scores = OracleOutputScores().score_blocks(ScorerInputs(q, k, q, k, layout, scale=0.3, v=v))
    direct = direct_costs(q, k, v, mask, 16, qbs, 0.3)
    selectable = layout.selectable_blocks(q.device)
    assert scores.shape == direct.shape and torch.equal(torch.isinf(scores), ~selectable.expand_as(scores))
    real = selectable.expand_as(scores) & (direct > 0)
    torch.testing.assert_close(scores.exp()[real].double(), direct[real], rtol=1e-5, atol=1e-12)


def test_a_heavy_block_whose_values_equal_the_output_costs_nothing():
    """Block 0 holds most of every query's attention, but all values are one vector c except two light blocks
    (2 and 4, same keys) carrying c + e and c - e, so the output is c: the mass oracle ranks block 0 first, the
    output oracle ranks the two light blocks first (only dropping one of them moves the output)."""
    torch.manual_seed(1)
    s, bs, d = 96, 16, 8
    q = torch.zeros(1, 1, s, d).double()
    q[..., 0] = 4.0
    k = torch.randn(1, 1, s, d).double() * 0.1
    k[:, :, :bs, 0] = 3.0  # block 0: every query's heaviest block
    k[:, :, 4 * bs: 5 * bs] = k[:, :, 2 * bs: 3 * bs]
    c, e = torch.randn(d).double(), torch.randn(bs, d).double()
    v = c.expand(1, 1, s, d).clone()
    v[0, 0, 2 * bs: 3 * bs], v[0, 0, 4 * bs: 5 * bs] = c + e, c - e
    layout = BlockLayout(s, bs)
    inputs = ScorerInputs(q, k, q, k, layout, v=v)
    mass, output = OracleScores().score_blocks(inputs), OracleOutputScores().score_blocks(inputs)
    last = s // bs - 1  # the last query block sees all six key blocks
    assert int(mass[0, 0, last].argmax()) == 0
    assert set(output[0, 0, last].topk(2).indices.tolist()) == {2, 4}
    assert float(output[0, 0, last, 0].exp()) < 1e-12


def test_output_oracle_needs_the_values():
    layout = BlockLayout(64, 16)
    q = torch.randn(1, 2, 64, 8)
    with pytest.raises(ValueError, match="needs the values"):
        OracleOutputScores().score_blocks(ScorerInputs(q, q, q, q, layout))
