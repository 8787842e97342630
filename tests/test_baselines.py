"""Training-free scorers behave as their names say and plug into SeerFlexAttention unchanged."""

from __future__ import annotations

import pytest
import torch

from reference import dense_attention_f64, relative_error, token_mask
from seerflex import BlockLayout, ScorerInputs, SeerFlexConfig, TopK
from seerflex.scorers import SCORERS, PooledQKScores, RecencyScores, XAttentionScores
from test_attention import sparse_layer


def test_recency_with_density_zero_extra_is_sink_plus_local_window():
    layout = BlockLayout(10 * 32, 32)
    q = torch.randn(1, 2, 320, 16)
    scores = RecencyScores().score_blocks(ScorerInputs(q, q, q, q, layout))
    kept = TopK(k=4, sink=1, local=0, dense_last_rows=0).select(scores, layout).kept
    i = 9  # last row: sink block 0, then the three most recent blocks 7, 8, 9
    assert kept[0, 0, i].nonzero().flatten().tolist() == [0, 7, 8, 9]


def test_pooled_qk_scores_are_block_mean_dot_products():
    layout = BlockLayout(128, 64)
    q, k = torch.randn(1, 4, 128, 16), torch.randn(1, 2, 128, 16)
    scores = PooledQKScores().score_blocks(ScorerInputs(q, k, q, k, layout))
    qb, kb = q.view(1, 4, 2, 64, 16).mean(3), k.view(1, 2, 2, 64, 16).mean(3).repeat_interleave(2, 1)
    expected = (qb @ kb.transpose(-1, -2) / 4).masked_fill(~torch.ones(2, 2, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("qbs", [32, 64])
@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_drives_exact_sparse_attention(name, qbs):
    layer = sparse_layer(SeerFlexConfig(policy=TopK(density=0.3), block_size=32, q_block_size=qbs), 4, 2, 32)
    layer.runtime.scorer = SCORERS[name]()
    q, k, v = (torch.randn(2, h, 200, 32) for h in (4, 2, 2))
    mask = torch.ones(2, 200, dtype=torch.long)
    mask[1, :50] = 0
    out = layer(q, k, v, attention_mask=mask)
    layout = BlockLayout.from_attention_mask(mask, 200, 32, qbs)
    scores = layer.runtime.scorer.score_blocks(ScorerInputs(q, k, q, k, layout, v=v))
    assert scores.shape == (2, 4, *layout.shape)
    kept = layer.policy.select(scores, layout).kept
    ref = dense_attention_f64(q, k, v, token_mask(kept, 200, 32, mask, qbs))
    assert relative_error(out, ref, mask.double()) < 1e-5
    layer.policy = TopK(density=1.0)  # any scorer at density 1 is plain causal attention
    full = dense_attention_f64(q, k, v, token_mask(None, 200, 32, mask))
    assert relative_error(layer(q, k, v, attention_mask=mask), full, mask.double()) < 1e-5


def xattention_direct(q, k, bs, stride, valid, qbs=None):
    """XAttention's block mass in float64 as a sum over the antidiagonal offsets (not the concat trick),
    tiles of ``qbs`` (default ``bs``) strided query rows by ``bs`` keys."""
    qbs = qbs or bs
    q, k = q.double(), k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    b, h, s, d = q.shape
    n = -(-s // qbs) * qbs // bs  # key blocks padded to whole query blocks: one square strided grid
    pad = n * bs - s
    q, k = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k))
    real = torch.nn.functional.pad(valid, (0, pad)).view(b, -1, stride).any(-1)  # per strided group
    scores = sum(q[:, :, stride - 1 - t::stride] @ k[:, :, t::stride].transpose(-1, -2) for t in range(stride))
    scores = scores / d ** 0.5 / stride
    g = scores.shape[-1]
    allowed = torch.ones(g, g, dtype=torch.bool).tril()[None, None] & real[:, None, None, :]
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0) * real[:, None, :, None]
    per, per_q = bs // stride, qbs // stride
    return probs.view(b, h, n * bs // qbs, per_q, n, per).sum((3, 5))[..., : -(-s // bs)]


@pytest.mark.parametrize("qbs", [32, 64])
@pytest.mark.parametrize("left_pad", [0, 45])
def test_xattention_scores_equal_a_direct_float64_implementation(left_pad, qbs):
    q, k = torch.randn(2, 4, 200, 16) * 2, torch.randn(2, 2, 200, 16) * 2
    mask = torch.ones(2, 200, dtype=torch.long)
    mask[1, :left_pad] = 0
    layout = BlockLayout.from_attention_mask(mask, 200, 32, qbs)
    scores = XAttentionScores(stride=8).score_blocks(ScorerInputs(q, k, q, k, layout))
    direct = xattention_direct(q, k, 32, 8, mask.bool(), qbs)
    selectable = layout.selectable_blocks(torch.device("cpu")).expand_as(scores)
    assert torch.isinf(scores[~selectable]).all() and (scores[~selectable] < 0).all()
    torch.testing.assert_close(scores.exp()[selectable].double(), direct[selectable], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="stride 24 must divide the block size 32"):
        XAttentionScores(stride=24).score_blocks(ScorerInputs(q, k, q, k, layout))


def vertical_slash_direct(q, k, bs, last_q, valid, qbs=None, scale=None):
    """The vertical-slash block estimate with explicit loops over tiles, lines and the last real queries (float64)."""
    qbs = qbs or bs
    q, k = q.double(), k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    b, h, s, d = q.shape
    n, nq = -(-s // bs), -(-s // qbs)
    out = torch.zeros(b, h, nq, n, dtype=torch.float64)
    for bi in range(b):
        rows = [r for r in range(s) if valid[bi, r]][-last_q:]
        for hi in range(h):
            vertical, slash = torch.zeros(s, dtype=torch.float64), torch.zeros(s, dtype=torch.float64)
            for r in rows:
                keys = [c for c in range(r + 1) if valid[bi, c]]
                p = (q[bi, hi, r] @ k[bi, hi, keys].T * (scale or d ** -0.5)).softmax(-1)
                for c, pc in zip(keys, p):
                    vertical[c] += pc
                    slash[r - c] += pc
            for i in range(nq):
                for j in range(-(-min(s, i * qbs + qbs) // bs)):
                    offsets = {x - y for x in range(i * qbs, min(s, i * qbs + qbs))
                               for y in range(j * bs, min(s, j * bs + bs)) if x >= y}
                    out[bi, hi, i, j] = vertical[j * bs: j * bs + bs].sum() + sum(slash[o] for o in offsets)
    return out


@pytest.mark.parametrize(("left_pad", "right_pad", "qbs", "scale"),
                         [(0, 0, 32, None), (21, 0, 32, None), (21, 0, 64, None), (0, 30, 32, 0.2), (5, 70, 64, None)])
def test_vertical_slash_scores_equal_a_direct_float64_implementation(left_pad, right_pad, qbs, scale):
    """Under right padding the lines are the last *real* queries' (a sequence shorter than last_q: all of them)."""
    from seerflex.scorers import VerticalSlashScores

    q, k = torch.randn(2, 2, 90, 8) * 2, torch.randn(2, 1, 90, 8) * 2
    mask = torch.ones(2, 90, dtype=torch.long)
    mask[1, :left_pad] = 0
    mask[1, 90 - right_pad:] = 0
    layout = BlockLayout.from_attention_mask(mask, 90, 32, qbs)
    scores = VerticalSlashScores(last_q=16).score_blocks(ScorerInputs(q, k, q, k, layout, scale=scale))
    direct = vertical_slash_direct(q, k, 32, 16, mask.bool(), qbs, scale)
    selectable = layout.selectable_blocks(torch.device("cpu")).expand_as(scores)
    torch.testing.assert_close(scores.exp()[selectable].double(), direct[selectable], rtol=1e-4, atol=1e-6)


def test_flexprefill_picks_per_head_by_the_js_divergence_of_its_two_estimates():
    """A direct float64 JS divergence per head decides the mode; the scores are the chosen scorer's."""
    from seerflex.scorers import FlexPrefillScores, VerticalSlashScores

    q, k = torch.randn(1, 4, 256, 16), torch.randn(1, 2, 256, 16)
    q *= torch.tensor([0.05, 0.5, 2.0, 4.0]).view(1, 4, 1, 1)  # from near-uniform to peaked attention
    layout = BlockLayout(256, 32)
    x = ScorerInputs(q, k, q, k, layout)
    kk, last = k.double().repeat_interleave(2, 1), q[:, :, -128:].double()
    causal = torch.arange(256)[None, :] <= torch.arange(128, 256)[:, None]
    probs = (last @ kk.transpose(-1, -2) / 4).masked_fill(~causal, float("-inf")).softmax(-1)
    measured = probs.sum(2).view(1, 4, 8, 32).sum(-1)
    measured = measured / measured.sum(-1, keepdim=True)
    estimate = ((last.mean(2, keepdim=True) @ kk.view(1, 4, 8, 32, 16).mean(3).transpose(-1, -2))[:, :, 0] / 4)
    estimate = estimate.softmax(-1)
    m = (estimate + measured) / 2
    distance = (0.5 * ((estimate * (estimate / m).log()).sum(-1) + (measured * (measured / m).log()).sum(-1))).sqrt()
    tau = float(distance.min() + distance.max()) / 2  # both modes occur
    expected = distance < tau
    scorer = FlexPrefillScores(tau=tau)
    assert torch.equal(scorer.query_aware(x), expected) and 0 < int(expected.sum()) < 4
    scores = scorer.score_blocks(x)
    pooled, lines = PooledQKScores().score_blocks(x), VerticalSlashScores(last_q=128).score_blocks(x)
    torch.testing.assert_close(scores, torch.where(expected[:, :, None, None], pooled, lines))


def test_oracle_max_ranks_key_blocks_by_their_largest_float64_attention_weight():
    """``oracle_max`` (the bound of gates distilled on the original's ``max`` target) ranks each query block's
    key blocks as the 2D max-pool of exact causal attention does."""
    from seerflex.scorers import OracleMaxScores

    q, k = torch.randn(1, 4, 256, 16) * 2, torch.randn(1, 2, 256, 16) * 2
    layout = BlockLayout(256, 32)
    scores = OracleMaxScores().score_blocks(ScorerInputs(q, k, q, k, layout))
    kk = k.double().repeat_interleave(2, 1)
    causal = torch.ones(256, 256, dtype=torch.bool).tril()
    probs = (q.double() @ kk.transpose(-1, -2) / 4).masked_fill(~causal, float("-inf")).softmax(-1)
    direct = probs.view(1, 4, 8, 32, 8, 32).amax((3, 5))
    for i in range(8):  # the causal part of every query block, in the same order
        assert torch.equal(scores[..., i, : i + 1].argsort(-1, descending=True),
                           direct[..., i, : i + 1].argsort(-1, descending=True))


@pytest.mark.parametrize("name", ["vertical_slash", "flexprefill", "xattention", "oracle", "oracle_output"])
def test_a_right_padded_sequence_scores_as_it_does_alone(name):
    """Padding after the prompt changes nothing a scorer sees: the real blocks' scores of a right-padded sequence in a
    batch equal those of the same sequence run alone (FlexPrefill's per-head choice included)."""
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 4, 128, 16) * 2, torch.randn(2, 2, 128, 16) * 2, torch.randn(2, 2, 128, 16)
    mask = torch.ones(2, 128, dtype=torch.long)
    mask[1, 96:] = 0
    scorer = SCORERS[name]() if name != "flexprefill" else SCORERS[name](last_q=64)
    batch = scorer.score_blocks(ScorerInputs(q, k, q, k, BlockLayout.from_attention_mask(mask, 128, 32), v=v))
    alone = scorer.score_blocks(ScorerInputs(q[1:, :, :96], k[1:, :, :96], q[1:, :, :96], k[1:, :, :96],
                                             BlockLayout(96, 32), v=v[1:, :, :96]))
    torch.testing.assert_close(batch[1, :, :3, :3], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("real", "scale"), [(192, None), (40, 0.3)])
def test_flexprefill_decides_a_right_padded_sequence_as_it_does_alone(real, scale):
    """The per-head choice reads the last *real* queries (all of them when fewer than ``last_q``) with the attention's
    scale: over a grid of tau every head decides as it does alone."""
    from seerflex.scorers import FlexPrefillScores

    torch.manual_seed(4)
    q, k = torch.randn(2, 4, 256, 16), torch.randn(2, 2, 256, 16)
    q *= torch.tensor([0.05, 0.5, 2.0, 4.0]).view(1, 4, 1, 1)  # from near-uniform to peaked attention
    q[1, :, real:] *= 10  # padding that would pull a mean over the last positions away
    mask = torch.ones(2, 256, dtype=torch.long)
    mask[1, real:] = 0
    batch = ScorerInputs(q, k, q, k, BlockLayout.from_attention_mask(mask, 256, 32), scale=scale)
    alone = ScorerInputs(q[1:, :, :real], k[1:, :, :real], q[1:, :, :real], k[1:, :, :real], BlockLayout(real, 32),
                         scale=scale)
    decisions = set()
    for tau in torch.linspace(0.0, 1.0, 201).tolist():
        scorer = FlexPrefillScores(tau=tau, last_q=64)
        assert torch.equal(scorer.query_aware(batch)[1], scorer.query_aware(alone)[0]), tau
        decisions.add(int(scorer.query_aware(alone).sum()))
    assert len(decisions) >= 3  # the grid crosses the heads' distances


def flexprefill_distance_direct(q, k, valid, bs, last_q, scale):
    """FlexPrefill's sqrt-JS distance per (sequence, head) by loops in float64: the last ``last_q`` real queries'
    measured block mass against softmax(mean of those queries . mean real key of each block x scale)."""
    q, k = q.double(), k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    b, h, s, _ = q.shape
    out = torch.zeros(b, h, dtype=torch.float64)
    for bi in range(b):
        real = [t for t in range(s) if valid[bi, t]]
        rows, end = real[-last_q:], real[-1]
        blocks = [j for j in range(-(-s // bs)) if j * bs <= end and valid[bi, j * bs: (j + 1) * bs].any()]
        for hi in range(h):
            measured = torch.zeros(len(blocks), dtype=torch.float64)
            for r in rows:
                keys = [c for c in real if c <= r]
                p = (q[bi, hi, r] @ k[bi, hi, keys].T * scale).softmax(-1)
                for c, pc in zip(keys, p):
                    measured[blocks.index(c // bs)] += pc
            measured /= measured.sum()
            mean_q = q[bi, hi, rows].mean(0)
            pooled = torch.stack([k[bi, hi, [c for c in real if c // bs == j]].mean(0) for j in blocks])
            estimate = (pooled @ mean_q * scale).softmax(-1)
            m = (estimate + measured) / 2
            kl = lambda a, c: torch.where(a > 0, a * (a.clamp(min=1e-300) / c).log(), 0.0).sum()  # noqa: E731
            out[bi, hi] = (0.5 * (kl(estimate, m) + kl(measured, m))).sqrt()
    return out


def test_flexprefill_choice_equals_a_float64_loop_with_left_padding_short_sequences_and_a_scale():
    from seerflex.scorers import FlexPrefillScores

    torch.manual_seed(5)
    q, k = torch.randn(2, 4, 160, 16), torch.randn(2, 2, 160, 16)
    q *= torch.tensor([0.05, 0.5, 2.0, 4.0]).view(1, 4, 1, 1)
    mask = torch.ones(2, 160, dtype=torch.long)
    mask[1, :110] = 0  # 50 real tokens over four blocks, fewer than last_q
    x = ScorerInputs(q, k, q, k, BlockLayout.from_attention_mask(mask, 160, 16), scale=0.4)
    distance = flexprefill_distance_direct(q, k, mask.bool(), 16, 64, 0.4)
    assert (distance > 0.01).all()
    torch.testing.assert_close(FlexPrefillScores(last_q=64).distance(x).double(), distance, rtol=1e-4, atol=1e-6)
