"""The last queries' exact attention as the ranking of a policy's vertical columns, against float64."""

from __future__ import annotations

import pytest
import torch

from reference import dense_attention_f64, relative_error, token_mask
from seerflex import BlockLayout, RuntimeOptions, SeerFlexAttention, SeerFlexConfig, TopK, TopP
from seerflex.last_queries import ranked_scores, with_last_queries
from seerflex.scorer import ScorerInputs
from seerflex.runtime import Runtime


def mask_of(b: int, s: int, pad: str) -> torch.Tensor | None:
    """The last sequence padded by 37 tokens on ``pad``'s side (None: no padding)."""
    if pad == "none":
        return None
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[-1, slice(0, 37) if pad == "left" else slice(s - 37, s)] = False
    return mask


@pytest.mark.parametrize("ratio", [1, 2])
@pytest.mark.parametrize(("s", "pad"), [(301, "none"), (301, "right"), (250, "left"), (40, "none"), (20, "none"),
                                      (50, "left"), (50, "right")])
def test_the_last_real_row_becomes_the_last_queries_exact_block_mass(s, pad, ratio):
    """GQA, batch 2, odd lengths, padding on either side, fewer tokens (20) or real tokens (13 after padding)
    than queries read; every other row kept."""
    torch.manual_seed(0)
    b, h, hkv, d, block, last = 2, 4, 2, 16, 16, 24
    q, k = torch.randn(b, h, s, d), torch.randn(b, hkv, s, d)
    valid = mask_of(b, s, pad)
    layout = BlockLayout(s, block, valid, block * ratio)
    scores = torch.randn(b, h, layout.num_q_blocks, layout.num_blocks)
    out = with_last_queries(scores, q, k, valid, block, block * ratio, 0.3, last)

    real = torch.ones(b, s, dtype=torch.bool) if valid is None else valid
    probs = torch.softmax((q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2) * 0.3).masked_fill(
        ~token_mask(None, s, block, real), float("-inf")), -1).nan_to_num(0.0)
    for i in range(b):
        end = int(real[i].nonzero().max())
        rows = [r for r in range(max(0, end - last + 1), end + 1) if real[i, r]]
        mass = torch.nn.functional.pad(probs[i][:, rows].sum(1), (0, layout.num_blocks * block - s)).view(
            h, layout.num_blocks, block).sum(-1)
        row = end // (block * ratio)
        got = out[i, :, row].double().exp()
        assert torch.allclose(got, mass.clamp(min=1e-30), rtol=1e-4, atol=1e-12)
        others = [r for r in range(layout.num_q_blocks) if r != row]
        assert torch.equal(out[i][:, others], scores[i][:, others])


def test_a_column_only_the_last_queries_read_is_kept_in_every_row():
    """A key block the prompt's last queries attend to, ranked low by the scores themselves: ``vertical=1``
    keeps it in every row that may see it, the plain policy does not."""
    torch.manual_seed(1)
    b, h, s, d, block = 1, 2, 320, 16, 32
    q, k = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    q[:, :, -32:] = k[:, :, 96:128].mean(2, keepdim=True) * 6  # the last queries look for block 3
    scores = torch.randn(b, h, 10, 10)
    scores[..., 3] = -50.0
    layout = BlockLayout(s, block)
    ranked = with_last_queries(scores, q, k, None, block, block)
    kept = TopK(density=0.0, sink=0, local=0, vertical=1).select(ranked, layout).kept
    plain = TopK(density=0.0, sink=0, local=0).select(ranked, layout).kept
    assert kept[0, :, 4:, 3].all() and not plain[0, :, 4:-1, 3].any()


@pytest.mark.parametrize(("compile", "ratio", "pad"), [("eager", 1, "right"), ("eager", 2, "left"),
                                                      ("dynamic", 1, "none"), ("dynamic", 2, "none")])
def test_a_vertical_policy_layer_matches_f64_with_the_last_queries_columns(compile, ratio, pad):
    """Both routes (eager and padded: scorer then policy; compiled unpadded: the fused plan) keep the columns the
    last queries read and attend exactly within the blocks kept."""
    torch.manual_seed(2)
    policy = TopP(0.3, vertical=2) if ratio == 2 else TopK(density=0.1, vertical=2)
    cfg = SeerFlexConfig(policy=policy, block_size=32, q_block_size=32 * ratio)
    layer = SeerFlexAttention(cfg, 4, 2, 32, runtime=Runtime(RuntimeOptions(dense_below=0, compile=compile)))
    s = 32 * 9 + 7
    q, k, v = torch.randn(2, 4, s, 32), torch.randn(2, 2, s, 32), torch.randn(2, 2, s, 32)
    valid = mask_of(2, s, pad)
    layout = BlockLayout(s, 32, valid, 32 * ratio)
    ranked = with_last_queries(layer.gate(q, k, layout), q, k, valid, 32, 32 * ratio)
    kept = policy.select(ranked, layout).kept
    assert not torch.equal(kept, layer.policy.select(layer.gate(q, k, layout), layout).kept)  # the columns matter
    out = layer(q, k, v, attention_mask=None if valid is None else valid.long())
    ref = dense_attention_f64(q, k, v, token_mask(kept, s, 32, valid, 32 * ratio))
    rows = None if valid is None else valid
    assert relative_error(out, ref, rows) < 1e-5


def test_the_layer_and_the_distillation_collector_rank_the_same_scores(tiny_text, tmp_path, monkeypatch):
    """``ranked_scores``: plain detached scores without vertical columns, the last queries' row with them; the
    collector (distillation recall, ``eval sparsity``) goes through it with the layer's policy."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 4, 100, 16), torch.randn(1, 2, 100, 16)
    layout = BlockLayout(100, 16)
    scores = torch.randn(1, 4, 7, 7, requires_grad=True)
    inputs = ScorerInputs(q, k, q, k, layout, "eager", 0.2)
    plain = ranked_scores(TopK(density=0.1), scores, inputs)
    assert torch.equal(plain, scores.detach()) and not plain.requires_grad
    assert torch.equal(ranked_scores(TopK(density=0.1, vertical=1), scores, inputs),
                       with_last_queries(scores.detach(), q, k, None, 16, 16, 0.2))

    from seerflex.distill import collector
    from seerflex.recipes import eval as eval_recipe
    from models import CharTokenizer, SMALL_LLAMA, tiny_model

    seen = []
    monkeypatch.setattr(collector, "ranked_scores", lambda policy, s, x: (seen.append(policy.vertical), s.detach())[1])
    monkeypatch.setattr(eval_recipe, "load_model",
                        lambda name, dtype=torch.float32: (tiny_model("llama", **SMALL_LLAMA), CharTokenizer()))
    assert eval_recipe.main(["sparsity", "--model", "tiny", "--text", str(tiny_text), "--window", "1024",
                             "--policy", "topk:0.3:vertical=2", "--out", str(tmp_path)]) == 0
    assert seen and set(seen) == {2}
