"""Policy semantics: exact k, threshold, top-p, forced blocks, bounds, overrides, serialisation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seerflex import BlockLayout, SeerFlexConfig, Threshold, TopK, TopP
from seerflex.policies import as_policy


def random_scores(b=2, h=3, n=12, ratio=1):
    """Scores for n query blocks of ``ratio`` key blocks each."""
    layout = BlockLayout(n * 64 * ratio, 64, None, 64 * ratio)
    scores = torch.randn(b, h, *layout.shape).masked_fill(~layout.selectable_blocks(torch.device("cpu")), float("-inf"))
    return scores, layout


def forced_of(policy, layout, shape):
    """Reference always-on blocks of an unpadded layout: diagonal group, local previous, first sink blocks."""
    r = layout.ratio
    i, j = torch.arange(layout.num_q_blocks)[:, None], torch.arange(layout.num_blocks)[None, :]
    return ((j < (i + 1) * r) & ((j >= i * r - policy.local) | (j < policy.sink))).expand(shape)


@pytest.mark.parametrize("ratio", [1, 2])
def test_exact_k_keeps_forced_then_best_scores(ratio):
    scores, layout = random_scores(ratio=ratio)
    policy = TopK(k=5, sink=1, local=1, dense_last_rows=0)
    selection = policy.select(scores, layout)
    kept = selection.kept
    n_avail = torch.arange(1, 13) * ratio
    assert torch.equal(kept.sum(-1), torch.minimum(n_avail, torch.tensor(5)).expand(2, 3, 12))
    group = torch.arange(12)[:, None] * ratio + torch.arange(ratio)  # the order starts with the diagonal group
    assert torch.equal(selection.order[..., :ratio].sort(-1).values, group.expand(2, 3, 12, ratio))
    forced = forced_of(policy, layout, kept.shape)
    assert not (forced & ~kept).any()
    # among the non-forced blocks, every kept one scores at least as high as every dropped one
    free = scores.masked_fill(forced, float("nan"))
    lowest_kept = free.masked_fill(~kept | forced, float("inf")).amin(-1)
    highest_dropped = free.masked_fill(kept | forced | scores.isinf(), float("-inf")).amax(-1)
    assert (lowest_kept >= highest_dropped).all()


@pytest.mark.parametrize("ratio", [1, 2, 4])
def test_density_zero_keeps_only_forced_blocks(ratio):
    scores, layout = random_scores(ratio=ratio)
    policy = TopK(density=0.0, sink=2, local=3, dense_last_rows=0)
    kept = policy.select(scores, layout).kept
    assert torch.equal(kept, forced_of(policy, layout, kept.shape))


@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("policy", [TopK(density=0.3, sink=2, local=3), TopP(0.5, sink=0, local=1)])
def test_always_on_is_what_every_selection_keeps_whatever_the_scores(ratio, policy):
    """``Policy.always_on`` (the free recall's reference set) equals the reference forced blocks, and a selection
    on random scores always holds it; with left padding the sink moves to the first real block."""
    scores, layout = random_scores(ratio=ratio)
    on = policy.always_on(layout, torch.device("cpu"))
    assert (policy.select(scores, layout).kept >= on).all()
    assert torch.equal(on[..., -1, :], layout.selectable_blocks(torch.device("cpu"))[..., -1, :])  # the dense last row
    on = dataclasses.replace(policy, dense_last_rows=0).always_on(layout, torch.device("cpu"))
    assert torch.equal(on.expand(scores.shape), forced_of(policy, layout, scores.shape))
    mask = torch.ones(2, 8 * 64, dtype=torch.long)
    mask[1, : 3 * 64 + 10] = 0  # sequence 1 starts inside block 3
    padded = BlockLayout.from_attention_mask(mask, 8 * 64, 64)
    on = TopK(density=0.0, sink=1, local=0).always_on(padded, torch.device("cpu"))
    assert on[0, 0, 7, 0] and not on[1, 0, 7, 0] and on[1, 0, 7, 3]


def test_uniform_nz_ratio_form_matches_original_rule():
    scores, layout = random_scores(n=16)
    kept = TopK.original(0.3).select(scores, layout).kept
    k = int((1 - (1 - 0.3) ** 0.5) * 16)
    rows = kept.sum(-1)
    expected = torch.clamp(torch.arange(1, 17), max=k).clamp(min=1)
    expected[-2:] = torch.tensor([15, 16])
    assert torch.equal(rows[0, 0], expected)


def test_threshold_keeps_exactly_the_blocks_above_it():
    scores, layout = random_scores()
    t = 0.08
    kept = Threshold(t, sink=0, local=0, min_blocks=0, dense_last_rows=0).select(scores, layout).kept
    probs = scores.softmax(-1)
    diag = torch.eye(12, dtype=torch.bool)
    assert torch.equal(kept, (probs > t) | diag)


def test_top_p_is_the_smallest_prefix_reaching_p():
    scores, layout = random_scores()
    p = 0.7
    kept = TopP(p, sink=0, local=0, min_blocks=0, dense_last_rows=0).select(scores, layout).kept
    probs = scores.softmax(-1)
    diag = torch.eye(12, dtype=torch.bool).expand_as(kept)
    mass = (probs * kept).sum(-1)
    assert (mass >= p - 1e-6).all()
    # dropping the least probable non-diagonal kept block would fall below p
    smallest = (probs.masked_fill(~kept | diag, float("inf"))).amin(-1)
    removable = torch.isfinite(smallest)
    assert ((mass - smallest)[removable] < p + 1e-6).all()


@pytest.mark.parametrize("policy", [TopK(density=0.0), Threshold(1.0), TopP(0.0)])
def test_rows_that_ask_for_nothing_keep_the_diagonal_then_min_blocks(policy):
    """No row is ever empty: with nothing forced but the diagonal, a rule asking for no block keeps
    exactly the diagonal; ``min_blocks`` then tops every row up to its bound."""
    scores, layout = random_scores()
    bare = dataclasses.replace(policy, sink=0, local=0, dense_last_rows=0)
    kept = bare.select(scores, layout).kept
    assert torch.equal(kept, torch.eye(12, dtype=torch.bool).expand_as(kept))
    kept = dataclasses.replace(bare, min_blocks=3).select(scores, layout).kept
    assert torch.equal(kept.sum(-1), torch.clamp(torch.arange(1, 13), max=3).expand(2, 3, 12))
    assert kept.diagonal(dim1=-2, dim2=-1).all()


def test_min_and_max_blocks_bound_every_row():
    scores, layout = random_scores()
    rows = TopK(k=9, sink=0, local=0, max_blocks=4, dense_last_rows=0).select(scores, layout).kept.sum(-1)
    assert int(rows.max()) == 4
    rows = Threshold(1.0, sink=0, local=0, min_blocks=5, dense_last_rows=0).select(scores, layout).kept.sum(-1)
    assert torch.equal(rows[0, 0], torch.clamp(torch.arange(1, 13), max=5))


@pytest.mark.parametrize("policy", [TopK(density=0.0), Threshold(1.0), TopP(0.0)])
@pytest.mark.parametrize("rows", [1, 2])
def test_last_rows_keep_every_block_and_the_rest_follow_the_rule(policy, rows):
    """The prompt's last block gives the first generated token: it attends densely."""
    scores, layout = random_scores()
    kept = dataclasses.replace(policy, dense_last_rows=rows).select(scores, layout).kept
    causal = layout.selectable_blocks(scores.device).expand_as(kept)
    assert torch.equal(kept[..., -rows:, :], causal[..., -rows:, :])
    assert torch.equal(kept[..., :-rows, :], forced_of(policy, layout, kept.shape)[..., :-rows, :])


def test_dense_last_rows_do_not_widen_the_priority_order():
    """Dense rows keep everything without an order: the order stays as narrow as the sparse rows need."""
    scores, layout = random_scores(n=40)
    selection = TopK(k=5, dense_last_rows=2).select(scores, layout)
    assert selection.order.shape[-1] == 5 and selection.dense_rows == 2
    assert selection.kept[..., -2:, :].sum(-1).tolist() == [[[39, 40]] * 3] * 2
    assert int(selection.kept[..., :-2, :].sum(-1).max()) == 5


def test_left_padding_moves_the_sink_to_the_first_real_block():
    mask = torch.ones(2, 8 * 64, dtype=torch.long)
    mask[1, : 3 * 64 + 10] = 0  # sequence 1 starts inside block 3
    layout = BlockLayout.from_attention_mask(mask, 8 * 64, 64)
    scores = torch.randn(2, 1, 8, 8)
    kept = TopK(density=0.0, sink=1, local=0).select(scores, layout).kept
    assert kept[0, 0, 7, 0] and not kept[1, 0, 7, 0] and kept[1, 0, 7, 3]
    # padding-only blocks are never chosen; their own rows keep just the diagonal
    assert torch.equal(kept[1, 0, :, :3], torch.eye(8, 3, dtype=torch.bool))


@pytest.mark.parametrize("ratio", [1, 2])
@pytest.mark.parametrize("policy", [TopK(density=0.0, sink=1, local=1, vertical=3),
                                    TopP(0.5, sink=1, local=1, vertical=3), Threshold(0.5, vertical=3)])
def test_vertical_columns_are_the_last_rows_best_far_blocks_kept_in_every_row(ratio, policy):
    torch.manual_seed(0)
    scores, layout = random_scores(n=12, ratio=ratio)
    kept = policy.select(scores, layout).kept
    plain = dataclasses.replace(policy, vertical=0).select(scores, layout).kept
    nk = layout.num_blocks
    last_forced = forced_of(policy, layout, (1, 1, 12, nk))[0, 0, -1]
    best = scores[..., -1, :].masked_fill(last_forced, float("-inf")).topk(3, dim=-1).indices
    columns = torch.zeros(2, 3, nk, dtype=torch.bool).scatter_(-1, best, True)
    selectable = layout.selectable_blocks(torch.device("cpu"))
    assert torch.equal(kept[..., :-1, :] & ~plain[..., :-1, :],
                       (columns[:, :, None] & selectable & ~plain)[..., :-1, :])
    assert (kept | ~(columns[:, :, None] & selectable)).all()  # every row keeps every column it may see


def test_vertical_columns_come_from_the_last_real_row_under_right_padding():
    mask = torch.ones(2, 8 * 64, dtype=torch.long)
    mask[1, 5 * 64 + 3:] = 0  # sequence 1 ends inside block 5
    layout = BlockLayout.from_attention_mask(mask, 8 * 64, 64)
    scores = torch.full((2, 1, 8, 8), -5.0)
    scores[:, :, 7, 2] = 5.0  # what the final (padding) row of sequence 1 would pick
    scores[1, :, 5, 1] = 5.0  # its last real row's pick
    kept = TopK(density=0.0, sink=0, local=0, dense_last_rows=0, vertical=1).select(scores, layout).kept
    assert kept[0, 0, 4, 2] and not kept[0, 0, 4, 1]
    assert kept[1, 0, 4, 1] and not kept[1, 0, 4, 2]


def test_per_head_parameters():
    scores, layout = random_scores(h=3)
    kept = TopK(k=[1, 4, 8], sink=0, local=0).select(scores, layout).kept
    assert kept[:, :, -2].sum(-1).tolist() == [[1, 4, 8]] * 2
    with pytest.raises(ValueError, match="3 heads"):
        TopK(k=[1, 2], sink=0, local=0).select(scores, layout)


def test_per_layer_policy_and_json_round_trip():
    cfg = SeerFlexConfig(policy=TopP(0.9), layer_policies={3: Threshold([1e-3, 2e-3])}, block_size=32)
    again = SeerFlexConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.policy_for(3) == Threshold((1e-3, 2e-3)) and again.policy_for(0) == TopP(0.9)


@pytest.mark.parametrize("policy", [TopK(density=0.2), TopK(k=3, max_blocks=2), TopK.original(0.3),
                                    TopK(density=[0.1, 0.2, 0.5]), Threshold(0.03, min_blocks=4), TopP(0.8),
                                    TopP(0.8, vertical=2)])
def test_selection_compiles_as_one_graph_with_the_same_result(policy):
    """The CUDA route compiles the selection; it must trace without graph breaks and agree with eager."""
    from seerflex.policies.base import policy_tensors, select_blocks

    torch._dynamo.reset()  # earlier tests compiled the same function: start below the recompile limit
    scores, layout = random_scores(n=20)
    compiled = torch.compile(select_blocks, fullgraph=True, backend="aot_eager")
    order, count, tail = compiled(type(policy).row_counts, scores, None, None,
                                  policy_tensors(policy, 20, 3, scores.device), policy.max_row_count(20),
                                  policy.dense_last_rows)
    eager = policy.select(scores, layout)
    assert torch.equal(count, eager.count)
    assert (order[..., 0] == torch.arange(20)).all()  # the diagonal leads every row
    kept = type(eager)(order, count, 20, tail).kept
    assert torch.equal(kept, eager.kept)


@pytest.mark.parametrize(("spec", "policy"), [
    ("topk:0.1", TopK(density=0.1)),
    ("topk:k=8:local=1", TopK(k=8, local=1)),
    ("topk:density=0.07:dense_last_rows=0:uniform=true", TopK(density=0.07, dense_last_rows=0, uniform=True)),
    ("threshold:2e-3", Threshold(2e-3)),
    ("topp:0.9:max_blocks=64", TopP(0.9, max_blocks=64)),
    ({"type": "topp", "p": 0.8, "sink": 0}, TopP(0.8, sink=0)),
])
def test_one_policy_syntax_for_objects_dicts_and_spec_strings(spec, policy):
    assert as_policy(spec) == policy
    assert as_policy(policy.to_dict()) == policy and as_policy(policy) is policy


@pytest.mark.parametrize("low", [-1e5, torch.finfo(torch.float32).min, float("-inf")])
def test_sixteen_bit_ranking_never_keeps_a_block_that_may_not_be_chosen(low):
    """Causal blocks whose scores fall below float16's range (or are -inf) still rank above non-causal ones."""
    layout = BlockLayout(512, 64, None, 128)
    cpu = torch.device("cpu")
    scores = torch.full((1, 2, *layout.shape), low).masked_fill(~layout.selectable_blocks(cpu), float("-inf"))
    kept = TopK(k=6, sink=0, local=0, dense_last_rows=0).select(scores, layout).kept
    allowed = layout.selectable_blocks(cpu) | layout.diagonal(cpu)
    assert not (kept & ~allowed).any()
    assert torch.equal(kept.sum(-1), torch.tensor([2, 4, 6, 6]).expand(1, 2, 4))  # rows fill up with causal blocks



def test_free_beyond_round_trips_and_names_what_a_policy_lacks():
    """The check itself; the layer runs it where its gates rank (test_attention), so baselines keep any policy."""
    beyond = {"sink": 1, "local": 2}
    cfg = SeerFlexConfig(policy=TopK(density=0.1, local=1), free_beyond=beyond)  # stored: checked where gates rank
    assert SeerFlexConfig.from_json(cfg.to_json()) == cfg and SeerFlexConfig().free_beyond is None
    with pytest.raises(ValueError, match="kl_blocks=free beyond sink=1, local=2.*topk has sink=1, local=1"):
        cfg.check_policy(cfg.policy)
    with pytest.raises(ValueError, match="has sink=0"):
        cfg.check_policy(Threshold(0.01, sink=0))
    assert cfg.check_policy(TopP(0.8, sink=2, local=3)) == TopP(0.8, sink=2, local=3)
    for bad in ({"sink": 1}, {"sink": -1, "local": 2}, {"sink": True, "local": 2}, {"sink": 1, "local": 2, "x": 0}):
        with pytest.raises(ValueError, match="free_beyond must be None or"):
            SeerFlexConfig(free_beyond=bad)

