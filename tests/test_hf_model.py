"""SeerFlexModel on tiny random models of every supported family (CPU, eager flex)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GPT2Config

from seerflex import RuntimeOptions, SeerFlexConfig, Threshold, TopK, get_seerflex_model
from seerflex.layout import BlockLayout
from seerflex.hf import SeerFlexModel
from seerflex.hf.attention_interface import STATE_ATTR
from seerflex.hf.capture import QKCapture
from models import FAMILIES, tiny_model

S = 200  # 7 blocks of 32


def make_model(family: str, **overrides) -> torch.nn.Module:
    return tiny_model(family, seed=int(torch.randint(0, 2**31, ())), **overrides)


def seer_config(policy=None, **kw) -> SeerFlexConfig:
    return SeerFlexConfig(**{"block_size": 32, "gate_hidden_size": 32, "policy": policy or TopK(density=1.0), **kw})


SPARSE_ALWAYS = RuntimeOptions(dense_below=0)


def batch(left_pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 128, (2, S))
    mask = torch.ones(2, S, dtype=torch.long)
    mask[1, :left_pad] = 0
    ids[1, :left_pad] = 0
    return ids, mask


@torch.no_grad()
def logits(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_density_one_matches_dense_and_sparse_changes_logits(family):
    model = make_model(family)
    ids, mask = batch(left_pad=37)
    real = mask.bool()
    dense = logits(model, ids, mask)
    sm = get_seerflex_model(model, seer_config(), runtime=SPARSE_ALWAYS)
    with sm.track_sparsity() as stats:
        full = logits(sm, ids, mask)
    gated = [1] if family.startswith("gemma") else [0, 1]  # Gemma: gates on global layers only
    assert [i for i, _ in stats] == gated and all(s.mean_density == 1.0 for _, s in stats)
    torch.testing.assert_close(full[real], dense[real], rtol=1e-5, atol=2e-5)

    sm.set_policy(TopK(density=0.1, local=0, dense_last_rows=0))  # 7 blocks: only the diagonal and sink are forced
    with sm.track_sparsity() as stats:
        sparse = logits(sm, ids, mask)
    assert all(s.mean_density < 0.6 for _, s in stats)
    assert torch.isfinite(sparse[real]).all()
    assert (sparse[real] - dense[real]).abs().max() > 1e-3
    with sm.disable_adapter():  # the base model itself, bit for bit
        assert torch.equal(logits(sm, ids, mask), dense)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_left_padded_batch(family):
    model = make_model(family)
    ids, mask = batch(left_pad=50)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    dense = model.generate(**kw)
    sm = get_seerflex_model(model, seer_config(), runtime=SPARSE_ALWAYS)
    with sm.track_sparsity() as stats:
        out = sm.generate(**kw)
    assert len(stats) == (1 if family.startswith("gemma") else 2)  # one sparse prefill per gated layer, dense decode
    assert torch.equal(out, dense)
    sm.set_policy(TopK(density=0.1))
    sparse = sm.generate(**kw)
    assert sparse.shape == dense.shape and torch.equal(sparse[:, :S], ids)


def test_mistral_beyond_sliding_window_runs_dense_window():
    model = make_model("mistral", sliding_window=128)
    ids, mask = batch()
    dense = logits(model, ids, mask)
    sm = get_seerflex_model(model, seer_config(TopK(density=0.1)), runtime=SPARSE_ALWAYS)
    with sm.track_sparsity() as stats:
        out = logits(sm, ids, mask)
    assert stats == []  # 200 tokens > window 128: exact dense sliding window
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)
    with sm.track_sparsity() as stats:
        logits(sm, ids[:, :120], mask[:, :120])
    assert len(stats) == 2  # inside the window, sliding == causal: gated


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "llama"])
def test_gate_sees_pre_rope_qk_after_norm(family, monkeypatch):
    model = make_model(family)
    sm = get_seerflex_model(model, seer_config(), runtime=SPARSE_ALWAYS)
    attn = sm.spec.layers[1].module
    seen, taken = {}, {}
    attn.register_forward_pre_hook(lambda m, a, kw: seen.update(h=kw["hidden_states"]), with_kwargs=True)
    original_take = QKCapture.take

    def spy(self, query, key):
        q, k = original_take(self, query, key)
        taken.update(q=q, k=k)
        return q, k

    monkeypatch.setattr(QKCapture, "take", spy)
    ids, mask = batch()
    logits(sm, ids, mask)
    assert all(state.capture.q is None for state in sm._states)  # nothing kept after the call
    h = seen["h"]
    shape = (*h.shape[:2], -1, 32)
    q, k = attn.q_proj(h).view(shape), attn.k_proj(h).view(shape)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    torch.testing.assert_close(taken["q"], q.transpose(1, 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(taken["k"], k.transpose(1, 2), rtol=0, atol=1e-6)


def kept_blocks(sm: SeerFlexModel, q, k) -> dict[int, torch.Tensor]:
    layout = BlockLayout(q.shape[2], 32, None, sm.peft_config[sm.active_adapter].q_block_size)
    return {s.layer_idx: s.active().policy.select(s.active().gate(q, k, layout), layout).kept for s in sm._states}


@pytest.mark.parametrize(("family", "qbs"), [("llama", 32), ("gemma2", 32), ("llama", 64)])
def test_save_load_round_trip_is_bit_exact(family, qbs, tmp_path):
    base = make_model(family)
    twin = copy.deepcopy(base)
    policy = Threshold(threshold=0.02)
    sm = get_seerflex_model(base, seer_config(policy, gate_type="Qavgmax_Kmaxminavg", q_block_size=qbs),
                            revision="abc123", runtime=SPARSE_ALWAYS)
    sm.set_policy(TopK(k=2), layers=[1])
    sm.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    gated = [1] if family == "gemma2" else [0, 1]
    assert cfg["peft_type"] == "SEERFLEX" and cfg["gated_layers"] == gated and cfg["revision"] == "abc123"
    assert (cfg["gate_type"], cfg["block_size"], cfg["q_block_size"], cfg["gate_hidden_size"]) == (
        "Qavgmax_Kmaxminavg", 32, qbs, 32)
    assert cfg["policy"]["type"] == "threshold" and cfg["layer_policies"]["1"]["k"] == 2
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["head_dim"]) == (2, 4, 32)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(f"model.layers.{i}.self_attn.seerflex_gate.{w}"
                                          for i in gated for w in ("q_weight", "k_weight"))

    loaded = SeerFlexModel.from_pretrained(twin, tmp_path, runtime=SPARSE_ALWAYS)
    assert not any(p.requires_grad for p in loaded.parameters())  # inference by default, like PEFT
    q, k = torch.randn(2, 4, S, 32), torch.randn(2, 2, S, 32)
    a, b = kept_blocks(sm, q, k), kept_blocks(loaded, q, k)
    assert all(torch.equal(a[i], b[i]) for i in a)
    ids, mask = batch(left_pad=40)
    assert torch.equal(logits(sm, ids, mask), logits(loaded, ids, mask))


def test_named_adapters_policies_and_unload(tmp_path, capsys):
    model = make_model("qwen2")
    pristine = copy.deepcopy(model.state_dict())
    ids, mask = batch()
    dense = logits(model, ids, mask)
    policy = TopK(k=3, sink=0, local=0)  # diagonal + the gate's two best blocks
    sm = get_seerflex_model(model, seer_config(policy), runtime=SPARSE_ALWAYS)
    sm.print_trainable_parameters()
    trainable = 2 * 4 * 3 * 32 * 32  # 2 layers x k_weight [4 heads, 3*32, 32]
    assert capsys.readouterr().out.startswith(f"trainable params: {trainable:,d} ||")
    sm.add_adapter("other", seer_config(policy))
    first = logits(sm, ids, mask)
    sm.set_adapter("other")
    assert sm.active_adapter == "other" and not torch.equal(logits(sm, ids, mask), first)
    sm.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "other" / "adapter_config.json").is_file()
    sm.load_adapter(tmp_path, "again")
    sm.set_adapter("again")
    assert torch.equal(logits(sm, ids, mask), first)
    gate = sm._states[0].adapters["again"].gate
    sm.set_policy(TopK(density=1.0))  # no reload: same gate object, new decisions
    assert sm._states[0].adapters["again"].gate is gate
    torch.testing.assert_close(logits(sm, ids, mask), dense, rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match="already exists"):
        sm.load_adapter(tmp_path, "again")
    sm.delete_adapter("again")
    assert sm.active_adapter == "default"

    base = sm.unload()
    assert base is model and base.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in base.parameters())
    state = base.state_dict()
    assert state.keys() == pristine.keys() and all(torch.equal(state[k], pristine[k]) for k in state)
    assert not any(m._forward_hooks for m in base.modules())
    assert torch.equal(logits(base, ids, mask), dense)


def test_mismatched_checkpoint_rejected_before_touching_the_model(tmp_path):
    get_seerflex_model(make_model("llama"), seer_config(), runtime=SPARSE_ALWAYS).save_pretrained(tmp_path)
    for overrides, message in [
        (dict(num_hidden_layers=3), r"num_hidden_layers: gates 2, model 3"),
        (dict(num_key_value_heads=4), r"num_key_value_heads: gates 2, model 4"),
    ]:
        model = make_model("llama", **overrides)
        with pytest.raises(ValueError, match=message):
            SeerFlexModel.from_pretrained(model, tmp_path)
        assert model.config._attn_implementation == "sdpa"
        assert all(p.requires_grad for p in model.parameters())
        assert not any(hasattr(m, STATE_ATTR) or m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"gates for layers \[0\].*sliding-window"):
        SeerFlexModel.from_pretrained(make_model("gemma2"), tmp_path)
    bad = get_seerflex_model(make_model("llama"), seer_config(gate_hidden_size=64), runtime=SPARSE_ALWAYS)
    bad.save_pretrained(tmp_path / "wide")
    cfg_path = tmp_path / "wide" / "adapter_config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"gate_hidden_size": 64', '"gate_hidden_size": 32'))
    with pytest.raises(ValueError, match="wrong shapes"):
        SeerFlexModel.from_pretrained(make_model("llama"), tmp_path / "wide")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds neither"):
        SeerFlexModel.from_pretrained(make_model("llama"), tmp_path / "empty")


def test_unsupported_architectures_are_named():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"model_type 'gpt2'.*q_proj/k_proj.*rotary.*Supported model types"):
        get_seerflex_model(gpt2, seer_config(), runtime=SPARSE_ALWAYS)
    dynamic = make_model("llama", rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
    with pytest.raises(ValueError, match="unsupported rope type 'dynamic'"):
        get_seerflex_model(dynamic, seer_config(), runtime=SPARSE_ALWAYS)


def test_wraps_a_peft_lora_model_and_peft_cannot_host_the_gates(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = make_model("llama")
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids, mask = batch(left_pad=20)
    dense = logits(lora, ids, mask)
    sm = get_seerflex_model(lora, seer_config(), runtime=SPARSE_ALWAYS)
    torch.testing.assert_close(logits(sm, ids, mask)[mask.bool()], dense[mask.bool()], rtol=1e-5, atol=2e-5)
    sm.save_pretrained(tmp_path)
    with pytest.raises(Exception, match="SEERFLEX"):  # PeftType is a closed enum
        PeftModel.from_pretrained(make_model("llama"), tmp_path)


def test_under_autocast_the_sparse_path_gets_one_dtype_as_sdpa_would():
    # RoPE in float32 leaves Q/K float32 under autocast while V comes out of its projection in bfloat16
    model = get_seerflex_model(tiny_model(), SeerFlexConfig(block_size=32, gate_hidden_size=16, policy=TopK(density=0.2)),
                               runtime=RuntimeOptions(dense_below=0))
    ids = torch.randint(1, 100, (2, 640))
    with torch.no_grad():
        exact = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16), model.track_sparsity() as stats:
            low = model(input_ids=ids).logits
    assert stats and all(s.mean_density < 1 for _, s in stats)  # the sparse path ran in every layer
    assert torch.nn.functional.cosine_similarity(low.float().flatten(), exact.flatten(), dim=0) > 0.999
