"""BlockMask builder: indices, full/partial split, and agreement of eager and compiled flex."""

from __future__ import annotations

import pytest
import torch

from reference import dense_attention_f64, relative_error, token_mask
from seerflex import BlockLayout, SeerFlexConfig, Threshold, TopK, TopP, build_block_mask
from seerflex.block_mask import block_mask_from_selection, compact_indices
from test_attention import sparse_layer


def test_compact_indices_lists_true_columns_first_in_order():
    blocks = torch.rand(3, 4, 9, 9) > 0.5
    count, idx = compact_indices(blocks)
    for row, c, i in zip(blocks.view(-1, 9), count.view(-1), idx.view(-1, 9)):
        assert c == row.sum() and i[:c].tolist() == row.nonzero().flatten().tolist()
    assert idx.dtype == count.dtype == torch.int32


@pytest.mark.parametrize("ratio", [1, 2])
@pytest.mark.parametrize("pad", [False, True])
def test_block_mask_keeps_exactly_the_decisions_with_disjoint_full_and_partial(pad, ratio):
    s, bs = 10 * 32 - 5, 32
    mask = torch.ones(2, s, dtype=torch.long)
    if pad:
        mask[0, :45] = 0
    layout = BlockLayout.from_attention_mask(mask, s, bs, bs * ratio)
    nq, nk = layout.shape
    diagonal = layout.diagonal(torch.device("cpu"))
    kept = torch.rand(2, 3, nq, nk) > 0.6
    kept = (kept & layout.selectable_blocks(torch.device("cpu"))) | diagonal
    bm = build_block_mask(kept, layout)
    assert bm.BLOCK_SIZE == (bs * ratio, bs)
    assert torch.equal(bm.to_dense().bool(), kept)
    full = torch.zeros_like(kept)
    for b, h, i in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(nq)).tolist():
        partial_cols = bm.kv_indices[b, h, i, : bm.kv_num_blocks[b, h, i]].tolist()
        full_cols = bm.full_kv_indices[b, h, i, : bm.full_kv_num_blocks[b, h, i]].tolist()
        assert not set(partial_cols) & set(full_cols)
        assert set(diagonal[i].nonzero().flatten().tolist()) <= set(partial_cols)  # causal tiles need mask_mod
        if pad and b == 0:
            assert 1 not in full_cols  # key block 1 mixes padding and real tokens
        full[b, h, i, full_cols] = True
    assert not (full & diagonal).any()
    assert bm.q_num_blocks is None and build_block_mask(kept, layout, compute_q_blocks=True).q_num_blocks is not None


def test_bad_decisions_are_rejected():
    layout = BlockLayout(128, 64)
    with pytest.raises(ValueError, match="bool tensor"):
        build_block_mask(torch.ones(1, 1, 2, 2), layout)
    with pytest.raises(ValueError, match="bool tensor"):
        build_block_mask(torch.ones(1, 1, 3, 3, dtype=torch.bool), layout)


@pytest.mark.slow
def test_compiled_flex_equals_reference_and_policy_swaps_do_not_recompile():
    """Compiled CPU run (static mode: gate, policy, indices and flex compiled): exact vs reference for
    every policy kind; new parameter values never recompile, a new sequence length does."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    layer = sparse_layer(SeerFlexConfig(block_size=32), 4, 2, 64, compile="static")
    graphs = []
    for s, policy in [(256, TopK(density=0.3)), (256, TopK(density=0.2)), (256, TopK(density=0.5)),
                      (320, TopK(density=0.3)), (256, Threshold(0.05)), (256, TopP(0.5)), (256, TopK(k=2))]:
        layer.policy = policy
        q, k, v = (torch.randn(1, h, s, 64) for h in (4, 2, 2))
        out = layer(q, k, v)
        layout = BlockLayout(s, 32)
        kept = policy.select(layer.gate(q, k, layout), layout).kept
        assert relative_error(out, dense_attention_f64(q, k, v, token_mask(kept, s, 32, None))) < 1e-5
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == graphs[1] == graphs[2] < graphs[3]  # static: graphs per length, none per parameter value


@pytest.mark.parametrize("policy", [TopK(density=0.3), TopK(k=2, sink=0, local=0), Threshold(0.05), TopP(0.7),
                                    TopK.original(0.4), TopK(density=0.3, dense_last_rows=0)])
@pytest.mark.parametrize(("s", "ratio"), [(64 * 13 + 5, 1), (64 * 13 + 5, 2), (64 * 14 + 5, 2), (64 * 13 + 5, 4)])
def test_mask_from_selection_lists_the_same_tiles(policy, s, ratio):
    """Fast-path indices (the policy's order) cover exactly the kept tiles, the diagonal group as the only
    partial ones (a short last query block has fewer)."""
    layout = BlockLayout(s, 64, None, 64 * ratio)
    (nq, n), cpu = layout.shape, torch.device("cpu")
    scores = torch.randn(2, 3, nq, n).masked_fill(~layout.selectable_blocks(cpu), float("-inf"))
    selection = policy.select(scores, layout)
    fast = block_mask_from_selection(selection, layout)
    full = torch.zeros(2, 3, nq, n + 1, dtype=torch.int32)
    rank = torch.arange(n)
    full.scatter_(-1, fast.full_kv_indices.long().masked_fill(rank >= fast.full_kv_num_blocks[..., None], n), 1)
    partial = torch.zeros_like(full).scatter_(-1, fast.kv_indices.long().masked_fill(
        rank >= fast.kv_num_blocks[..., None], n), 1)
    assert torch.equal(partial[..., :n].bool(), layout.diagonal(cpu).expand(2, 3, nq, n))
    assert torch.equal((full + partial)[..., :n].bool(), selection.kept)
    assert int((full + partial)[..., :n].max()) == 1  # no tile listed twice
    with pytest.raises(ValueError, match="unpadded"):
        padded = BlockLayout.from_attention_mask(torch.ones(1, layout.seq_len).index_fill_(1, torch.tensor([0]), 0),
                                                 layout.seq_len, 64)
        block_mask_from_selection(selection, padded)


@pytest.mark.parametrize("policy", [TopK(density=0.3), TopP(0.7), TopK(density=0.3, dense_last_rows=2)])
@pytest.mark.parametrize(("s", "ratio"), [(64 * 13 + 5, 1), (64 * 14 + 5, 2), (64 * 13 + 5, 4)])
def test_transposed_indices_list_what_torchs_transpose_lists(policy, s, ratio):
    """The backward's per-key-block lists made inside the plan equal torch's ``compute_q_blocks`` ones (the
    counts, and the listed query blocks in order; what follows a count is never read)."""
    from torch.nn.attention.flex_attention import _transpose_ordered

    from seerflex.block_mask import selection_indices

    layout = BlockLayout(s, 64, None, 64 * ratio)
    nq, n = layout.shape
    scores = torch.randn(2, 3, nq, n).masked_fill(~layout.selectable_blocks(torch.device("cpu")), float("-inf"))
    selection = policy.select(scores, layout)
    indices = selection_indices(selection.order, selection.count, selection.dense_rows, n, ratio, transpose=True)
    assert len(indices) == 8
    for (num, idx), (want_num, want_idx) in zip((indices[4:6], indices[6:]),
                                                (_transpose_ordered(*indices[:2]), _transpose_ordered(*indices[2:4]))):
        assert num.dtype == idx.dtype == torch.int32 and idx.shape == want_idx.shape == (2, 3, n, nq)
        assert torch.equal(num, want_num) and int(num.sum()) > 0
        listed = torch.arange(nq) < num[..., None]
        assert torch.equal(idx[listed], want_idx[listed])
