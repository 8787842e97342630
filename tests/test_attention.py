"""SeerFlexAttention against a float64 dense reference that uses the same block decisions."""

from __future__ import annotations

import pytest
import torch

from reference import dense_attention_f64, relative_error, token_mask
from seerflex import BlockLayout, RuntimeOptions, SeerFlexAttention, SeerFlexConfig, Threshold, TopK, TopP
from seerflex.runtime import Runtime


def sparse_layer(cfg: SeerFlexConfig, num_heads: int, num_kv_heads: int, head_dim: int, **options) -> SeerFlexAttention:
    """A layer that runs every prefill sparse (``dense_below=0``) unless ``options`` say otherwise."""
    runtime = Runtime(RuntimeOptions(**({"dense_below": 0} | options)))
    return SeerFlexAttention(cfg, num_heads, num_kv_heads, head_dim, runtime=runtime)


def make_inputs(b: int, hq: int, hkv: int, s: int, d: int, dtype=torch.float32):
    q, k, v = (torch.randn(b, h, s, d, dtype=dtype) for h in (hq, hkv, hkv))
    return q, k, v


def padding_mask(b: int, s: int, side: str) -> torch.Tensor | None:
    if side == "none":
        return None
    mask = torch.ones(b, s, dtype=torch.long)
    cut = torch.randint(1, s // 2, (1,)).item()
    if side == "left":
        mask[-1, :cut] = 0
    else:
        mask[-1, s - cut:] = 0
    return mask


def kept_blocks(layer: SeerFlexAttention, q, k, mask) -> torch.Tensor:
    layout = BlockLayout.from_attention_mask(mask, q.shape[2], layer.config.block_size, layer.config.q_block_size)
    return layer.policy.select(layer.gate(q, k, layout), layout).kept


@pytest.mark.parametrize("ratio", [1, 2])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize(("s", "d", "pad"), [(257, 64, "none"), (200, 128, "left"), (321, 64, "right")])
def test_sparse_output_matches_f64_reference(density, s, d, pad, ratio):
    """Square blocks and query blocks twice the key block (the 128 x 64 shape, scaled down)."""
    bs = 32 if d == 64 else 64
    cfg = SeerFlexConfig(policy=TopK(density=density), block_size=bs, q_block_size=bs * ratio)
    layer = sparse_layer(cfg, 8, 2, d)
    q, k, v = make_inputs(2, 8, 2, s, d)
    mask = padding_mask(2, s, pad)
    out, stats = layer(q, k, v, attention_mask=mask, return_stats=True)
    kept = kept_blocks(layer, q, k, mask)
    assert kept.shape[-2:] == (-(-s // (bs * ratio)), -(-s // bs))
    ref = dense_attention_f64(q, k, v, token_mask(kept, s, cfg.block_size, mask, cfg.q_block_size))
    rows = None if mask is None else mask.double()
    assert relative_error(out, ref, rows) < 1e-5
    if density == 1.0:  # all of the causal triangle: plain causal attention
        plain = dense_attention_f64(q, k, v, token_mask(None, s, cfg.block_size, mask))
        assert relative_error(out, plain, rows) < 1e-5
        assert stats.mean_density == 1.0
    if density == 0.0:  # only forced blocks: diagonal group, one sink, two local -> at most ratio + 3 per row ...
        assert int(kept[..., :-1, :].sum(-1).max()) <= ratio + 3
        layout = BlockLayout.from_attention_mask(mask, s, cfg.block_size, cfg.q_block_size)
        last = layout.selectable_blocks(kept.device).expand_as(kept)[..., -1, :].clone()
        last |= layout.diagonal(kept.device)[-1]  # the diagonal group is kept even when padding fills it
        assert torch.equal(kept[..., -1, :], last)  # ... but the last row keeps every block
    assert torch.isfinite(out).all()


def test_density_tracks_request_on_long_rows():
    cfg = SeerFlexConfig(policy=TopK(density=0.25, sink=0, local=0, dense_last_rows=0), block_size=32)
    layer = sparse_layer(cfg, 4, 4, 64)
    q, k, v = make_inputs(1, 4, 4, 32 * 64, 64)
    _, stats = layer(q, k, v, return_stats=True)
    assert abs(stats.mean_density - 0.25) < 0.02


@pytest.mark.parametrize("policy", [Threshold(0.02), TopP(0.8), TopK(k=3)])
def test_every_policy_runs_sparse_and_exact(policy):
    cfg = SeerFlexConfig(policy=policy, block_size=32)
    layer = sparse_layer(cfg, 4, 1, 64)
    q, k, v = make_inputs(1, 4, 1, 300, 64)
    out = layer(q, k, v)
    kept = kept_blocks(layer, q, k, None)
    assert relative_error(out, dense_attention_f64(q, k, v, token_mask(kept, 300, 32, None))) < 1e-5


def test_gates_distilled_on_free_blocks_refuse_fewer_always_on_blocks_where_they_rank():
    """Gates distilled with kl_blocks=free never learnt to rank their training policy's always-on blocks: a policy
    keeping fewer is refused with one line when the gates rank (eager and compiled routes alike), while a baseline
    scorer may run it; the distillation collector checks the same."""
    from seerflex.scorers import SCORERS

    cfg = SeerFlexConfig(policy=TopP(0.8, local=1), block_size=32, free_beyond={"sink": 1, "local": 2})
    q, k, v = make_inputs(1, 4, 2, 300, 32)
    for compile in ("eager", "dynamic"):
        layer = sparse_layer(cfg, 4, 2, 32, compile=compile)
        with pytest.raises(ValueError, match="distilled with kl_blocks=free beyond sink=1, local=2.*local=1"):
            layer(q, k, v)
    layer = sparse_layer(cfg, 4, 2, 32)
    layer.runtime.scorer = SCORERS["xattention"]()
    assert torch.isfinite(layer(q, k, v)).all()
    layer.runtime.scorer, layer.policy = None, "topp:0.8:local=2"
    kept = kept_blocks(layer, q, k, None)
    assert relative_error(layer(q, k, v), dense_attention_f64(q, k, v, token_mask(kept, 300, 32, None))) < 1e-5


def test_gate_sees_pre_rope_inputs_when_given():
    cfg = SeerFlexConfig(policy=TopK(k=2, sink=0, local=0), block_size=32)
    layer = sparse_layer(cfg, 2, 2, 64)
    q, k, v = make_inputs(1, 2, 2, 256, 64)
    gq, gk = make_inputs(1, 2, 2, 256, 64)[:2]
    out = layer(q, k, v, gate_q=gq, gate_k=gk)
    kept = kept_blocks(layer, gq, gk, None)
    assert relative_error(out, dense_attention_f64(q, k, v, token_mask(kept, 256, 32, None))) < 1e-5


@pytest.mark.parametrize("pad", ["none", "left"])
def test_dense_paths_decode_short_prompt_and_disabled(pad):
    layer = sparse_layer(SeerFlexConfig(), 4, 2, 64, dense_below=512)
    q, k, v = make_inputs(2, 4, 2, 100, 64)
    mask = padding_mask(2, 100, pad)
    rows = None if mask is None else mask.double()
    full = dense_attention_f64(q, k, v, token_mask(None, 100, 64, mask))
    assert relative_error(layer(q, k, v, attention_mask=mask), full, rows) < 1e-5  # short prompt
    decode = layer(q[:, :, -1:], k, v, attention_mask=mask)  # one query over the cache
    assert relative_error(decode, full[:, :, -1:]) < 1e-5
    layer.runtime.options, layer.runtime.sparse_layers = RuntimeOptions(dense_below=0), frozenset()  # layer off
    assert relative_error(layer(q, k, v, attention_mask=mask), full, rows) < 1e-5


def test_left_padded_rows_are_finite_everywhere():
    layer = sparse_layer(SeerFlexConfig(block_size=32), 4, 2, 64)
    q, k, v = make_inputs(2, 4, 2, 160, 64)
    mask = torch.ones(2, 160, dtype=torch.long)
    mask[0, :100] = 0  # several whole blocks of padding
    assert torch.isfinite(layer(q, k, v, attention_mask=mask)).all()


@pytest.mark.slow
@pytest.mark.parametrize(("density", "policy_cls", "ratio"), [(0.0, TopK, 1), (0.3, TopK, 1), (1.0, TopK, 1),
                                                         (0.9, TopP, 1), (0.0, TopK, 2), (0.3, TopK, 2)])
def test_compiled_fast_path_matches_f64_reference(density, policy_cls, ratio):
    """Compiled flex (CPU inductor here, Triton on GPU) with the BlockMask built straight from the
    policy's order (the fused plan): odd length, GQA, batch 2, no padding, square and 2:1 blocks."""
    policy = TopK(density=density) if policy_cls is TopK else TopP(density)
    cfg = SeerFlexConfig(policy=policy, block_size=32, q_block_size=32 * ratio)
    layer = sparse_layer(cfg, 4, 2, 32, compile="dynamic")
    s = 32 * 9 + 7 if ratio == 1 else 64 * 4 + 20  # 2:1: a short last query block holding one key block
    q, k, v = make_inputs(2, 4, 2, s, 32)
    out = layer(q, k, v)
    kept = kept_blocks(layer, q, k, None)
    ref = dense_attention_f64(q, k, v, token_mask(kept, s, cfg.block_size, None, cfg.q_block_size))
    assert relative_error(out, ref) < 1e-5


@pytest.mark.slow
def test_static_compile_past_the_recompile_limit_raises_instead_of_running_eager(monkeypatch):
    """Dynamo's default is to run flex_attention eagerly once a function has too many compiled
    shapes: S x S memory (2 TiB at 128k). seerflex turns that into a clear error."""
    import seerflex.flex

    monkeypatch.setattr(seerflex.flex, "RECOMPILE_LIMIT", 1)
    torch._dynamo.reset()
    layer = sparse_layer(SeerFlexConfig(policy=TopK(density=0.5), block_size=32), 2, 1, 16, compile="static")
    layer(*make_inputs(1, 2, 1, 96, 16))  # first shape compiles
    with pytest.raises(RuntimeError, match="compile='auto'"):
        layer(*make_inputs(1, 2, 1, 160, 16))
    torch._dynamo.reset()


@pytest.mark.parametrize(("ratio", "pad"), [(1, "none"), (2, "left"), (1, "right")])
def test_backward_through_sparse_attention_matches_f64_gradients(ratio, pad):
    """Training through the sparse layer off CUDA (masked SDPA: flex has no CPU backward): outputs and the
    gradients of q, k, v equal float64 masked attention's, padded rows included."""
    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32, q_block_size=32 * ratio)
    layer = sparse_layer(cfg, 4, 2, 32)
    q, k, v = (torch.randn(2, h, 200, 32, requires_grad=True) for h in (4, 2, 2))
    mask = padding_mask(2, 200, pad)
    out = layer(q, k, v, attention_mask=mask)
    kept = kept_blocks(layer, q.detach(), k.detach(), mask)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = dense_attention_f64(qd, kd, vd, token_mask(kept, 200, 32, mask, 32 * ratio))
    rows = (torch.ones(2, 200) if mask is None else mask.double())[:, None, :, None]
    weights = torch.randn_like(ref) * rows
    (out * weights.float()).sum().backward()
    (ref * weights).sum().backward()
    assert float(((out.double() - ref) * rows).abs().max()) < 1e-5
    for got, want in ((q, qd), (k, kd), (v, vd)):
        assert torch.isfinite(got.grad).all() and float((got.grad.double() - want.grad).abs().max()) < 1e-5


@pytest.mark.slow
def test_compiled_layer_trains_when_only_values_need_gradients():
    """LoRA on v_proj alone: Q needs no gradient, V does; the layer must still build a backward-ready mask."""
    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32)
    layer = sparse_layer(cfg, 4, 2, 32, compile="dynamic")
    q, k = torch.randn(1, 4, 200, 32), torch.randn(1, 2, 200, 32)
    v = torch.randn(1, 2, 200, 32, requires_grad=True)
    layer(q, k, v).sum().backward()
    kept = kept_blocks(layer, q, k, None)
    vd = v.detach().double().requires_grad_()
    dense_attention_f64(q, k, vd, token_mask(kept, 200, 32, None)).sum().backward()
    assert float((v.grad.double() - vd.grad).abs().max()) < 1e-5


def test_flex_backward_is_offered_tiles_that_fit_64_and_32_token_blocks(monkeypatch):
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexBwDConfig
    from torch._inductor.virtualized import V

    from seerflex.flex import backward_tiles

    big = FlexBwDConfig(64, 128, 128, 64, 3, 8)  # sm90's only choice at head dim 64-128: no 64-token mask fits
    monkeypatch.setattr(InductorChoices, "get_flex_attention_bwd_configs", lambda self, h, d, t="cuda": [big])

    def fits(c, block):
        return all(block % x == 0 for x in (c.block_m1, c.block_n1, c.block_m2, c.block_n2))

    with V.set_choices_handler(InductorChoices()):
        with backward_tiles():
            configs = V.choices.get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda")
            assert configs[0] == big and any(fits(c, 64) for c in configs) and any(fits(c, 32) for c in configs)
            assert V.choices.get_flex_attention_bwd_configs(64, torch.float32, "cuda") == [big]
            assert torch._functorch.config.force_non_lazy_backward_lowering  # lowered here, not in autograd's thread
        assert type(V.choices) is InductorChoices and not torch._functorch.config.force_non_lazy_backward_lowering

    class Mine(InductorChoices):
        pass

    with V.set_choices_handler(Mine()), backward_tiles():
        assert type(V.choices) is Mine  # a handler the user set is left alone


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1, 2])
def test_a_learning_gate_in_the_compiled_plan_gets_the_eager_gradients(ratio, monkeypatch):
    """Fine-tuning on the GPU runs the training gate inside the compiled plan (its logits leave the graph with
    their gradient, the backward's indices are made in it). Compiled (CPU inductor) and eager agree on the
    output, the gate loss, and the gradients of the gate and of q, k, v; the output is the f64 masked one; the
    compiled run went through the plan once, the loss was taken once, and the BlockMask's backward indices are
    torch's transposition of its forward ones."""
    from torch.nn.attention.flex_attention import _transpose_ordered

    import seerflex.attention as attention
    from seerflex.finetune import GateLoss

    seen = {"plans": 0, "masks": []}
    plan, sparse = attention.planned_block_mask, attention.sparse_attention

    def counted_plan(*args, **kwargs):
        seen["plans"] += 1
        return plan(*args, **kwargs)

    def kept_mask(q, k, v, block_mask, **kwargs):
        seen["masks"].append(block_mask)
        return sparse(q, k, v, block_mask, **kwargs)

    monkeypatch.setattr(attention, "planned_block_mask", counted_plan)
    monkeypatch.setattr(attention, "sparse_attention", kept_mask)
    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32, q_block_size=32 * ratio)
    s = 32 * 9 + 7
    base = [t.requires_grad_() for t in make_inputs(2, 4, 2, s, 32)]
    runs = []
    for mode in ("eager", "dynamic"):
        torch.manual_seed(0)
        layer = sparse_layer(cfg, 4, 2, 32, compile=mode)
        loss, calls = GateLoss(row_fraction=0.5, seed=1), []
        layer.runtime.gate_loss = lambda i, logits, inputs: (calls.append(i), loss(i, logits, inputs))
        q, k, v = (t.detach().clone().requires_grad_() for t in base)
        out = layer(q, k, v)
        total = loss.total()
        ((out * torch.linspace(-1, 1, 32)).sum() + total).backward()
        runs.append((out, total, layer.gate.k_weight.grad, layer.gate.q_weight.grad, q.grad, k.grad, v.grad))
        assert len(calls) == 1
    assert seen["plans"] == 1  # the compiled run only
    kept = kept_blocks(layer, q.detach(), k.detach(), None)
    ref = dense_attention_f64(q.detach(), k.detach(), v.detach(), token_mask(kept, s, 32, None, 32 * ratio))
    assert relative_error(runs[1][0].detach(), ref) < 1e-5
    mask = seen["masks"][-1]
    for num, idx, fwd in ((mask.q_num_blocks, mask.q_indices, (mask.kv_num_blocks, mask.kv_indices)),
                          (mask.full_q_num_blocks, mask.full_q_indices, (mask.full_kv_num_blocks, mask.full_kv_indices))):
        want_num, want_idx = _transpose_ordered(*fwd)
        listed = torch.arange(idx.shape[-1]) < num[..., None]
        assert torch.equal(num, want_num) and int(num.sum()) > 0 and torch.equal(idx[listed], want_idx[listed])
    for eager, compiled in zip(*runs):
        assert eager is not None and float(eager.abs().max()) > 0
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1, 2])
def test_the_fused_training_route_gives_the_backward_mask_and_the_gates_gradient(ratio, monkeypatch):
    """On CUDA a training call runs gate, policy, both index sets, BlockMask and flex as one compiled graph
    (``planned_attention(backward=True)``). flex has no CPU backward, so here: its BlockMask carries torch's
    transposition of the forward indices (eager, flex swapped for the masked reference), the compiled output is the
    f64 masked one, the logits and their gradient are the eager gate's, and a gate that skips its loss gets none;
    a CPU layer that needs a backward keeps the split route."""
    from torch.nn.attention.flex_attention import _transpose_ordered

    import seerflex.attention as attention
    import seerflex.plan as plan
    from seerflex.flex import masked_sdpa

    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32, q_block_size=32 * ratio)
    s = 32 * 9 + 7
    torch.manual_seed(0)
    layer = sparse_layer(cfg, 4, 2, 32, compile="dynamic")
    q, k, v = make_inputs(2, 4, 2, s, 32)
    layout = BlockLayout(s, 32, None, 32 * ratio)
    masks = []

    def recorded(q, k, v, block_mask, **kwargs):
        masks.append(block_mask)
        return masked_sdpa(q, k, v, block_mask, scale=kwargs.get("scale"))

    kept = kept_blocks(layer, q, k, None)
    ref = dense_attention_f64(q, k, v, token_mask(kept, s, 32, None, 32 * ratio))
    eager_logits = layer.gate(q, k, layout)
    want = torch.autograd.grad(eager_logits.masked_fill(eager_logits.isinf(), 0).sum(), layer.gate.k_weight)[0]
    for mode in ("eager", "dynamic"):
        with monkeypatch.context() as m:
            if mode == "eager":  # only with flex swapped for the masked reference: eager flex ignores the blocks
                m.setattr(plan, "flex_attention", recorded)
                m.setattr(plan, "compiles", lambda mode, device: True)
            out, selection, nan, logits = plan.planned_attention(
                layer.gate, layer.policy, q, k, v, q, k, layout, mode=mode, backend="auto", backward=True,
                with_logits=True)
        assert relative_error(out, ref) < 1e-5 and not bool(nan) and torch.equal(selection.kept, kept)
        torch.testing.assert_close(logits, eager_logits)
        got = torch.autograd.grad(logits.masked_fill(logits.isinf(), 0).sum(), layer.gate.k_weight)[0]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    mask = masks[0]
    for num, idx, fwd in ((mask.q_num_blocks, mask.q_indices, (mask.kv_num_blocks, mask.kv_indices)),
                          (mask.full_q_num_blocks, mask.full_q_indices, (mask.full_kv_num_blocks, mask.full_kv_indices))):
        want_num, want_idx = _transpose_ordered(*fwd)
        listed = torch.arange(idx.shape[-1]) < num[..., None]
        assert torch.equal(num, want_num) and int(num.sum()) > 0 and torch.equal(idx[listed], want_idx[listed])
    frozen, learning = (plan.plan_args(layer.gate, layer.policy, q, k, layout, learns)[2:4] for learns in (False, True))
    assert not any(w.requires_grad for w in frozen) and all(w.requires_grad for w in learning)
    calls = []
    monkeypatch.setattr(attention, "planned_attention", lambda *a, **kw: calls.append(1))
    layer(*(t.requires_grad_() for t in (q, k, v)))  # CPU + backward: the split route (masked SDPA)
    assert not calls


def test_the_fused_route_refuses_eager_flex():
    """Its BlockMask's mask_mod is causal only, and eager flex_attention evaluates mask_mod alone: it would attend
    to every causal key (rel. error 0.2-0.35 against the masked reference when forced), so it refuses."""
    import seerflex.plan as plan

    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32)
    layer = sparse_layer(cfg, 4, 2, 32, compile="eager")
    q, k, v = make_inputs(1, 4, 2, 32 * 4, 32)
    with pytest.raises(ValueError, match="needs a compiling mode, got 'eager'"):
        plan.planned_attention(layer.gate, layer.policy, q, k, v, q, k, BlockLayout(32 * 4, 32), mode="eager",
                               backend="auto")


@pytest.mark.slow
def test_a_learning_gate_hands_the_fused_routes_logits_to_its_loss(monkeypatch):
    """Where flex has a backward (CUDA) a learning layer takes the fused route with ``backward`` and ``with_logits``,
    and the gate loss gets the logits that route returned; with a frozen base model (q, k, v need no gradient) the
    same route runs on any device. The gate's gradient through it equals the eager layer's."""
    import seerflex.attention as attention
    from seerflex.finetune import GateLoss

    cfg = SeerFlexConfig(policy=TopK(density=0.3), block_size=32)
    q, k, v = make_inputs(1, 4, 2, 32 * 8 + 5, 32)
    fused, handed = [], []
    real = attention.planned_attention

    def spy(*args, **kwargs):
        fused.append(kwargs)
        # flex has no CPU backward: the recorded call runs forward only, on detached q, k, v
        return real(*args[:2], *(t.detach() for t in args[2:5]), *args[5:], **kwargs | {"backward": False})

    monkeypatch.setattr(attention, "planned_attention", spy)
    monkeypatch.setattr(attention, "flex_has_backward", lambda device: True)
    grads = []
    for mode, needs_grad in (("eager", False), ("dynamic", False), ("dynamic", True)):
        torch.manual_seed(0)
        layer = sparse_layer(cfg, 4, 2, 32, compile=mode)
        loss = GateLoss()
        layer.runtime.gate_loss = lambda i, logits, inputs: (handed.append(logits), loss(i, logits, inputs))
        layer(*(t.clone().requires_grad_(needs_grad) for t in (q, k, v)))
        loss.total().backward()
        grads.append(layer.gate.k_weight.grad)
        assert handed[-1].requires_grad
    assert [(c["backward"], c["with_logits"]) for c in fused] == [(False, True), (True, True)]
    for got in grads[1:]:
        torch.testing.assert_close(got, grads[0], rtol=1e-4, atol=1e-6)
