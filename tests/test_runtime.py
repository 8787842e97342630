"""Saved vs runtime state: adapters hold only the gates and their policies; SeerFlexModel owns the rest."""

from __future__ import annotations

import json

import pytest
import torch

from models import tiny_model
from seerflex import RuntimeOptions, SeerFlexConfig, Threshold, TopK, TopP, get_seerflex_model
from seerflex.hf import SeerFlexModel
from seerflex.scorers import PooledQKScores

CONFIG = SeerFlexConfig(block_size=32, gate_hidden_size=32, policy=TopK(density=0.3))


def wrapped(**runtime) -> SeerFlexModel:
    return get_seerflex_model(tiny_model("llama"), CONFIG, runtime=RuntimeOptions(**({"dense_below": 0} | runtime)))


def test_adapters_never_store_runtime_options_and_old_ones_still_load(tmp_path):
    sm = wrapped(compile="eager", dense_below=77, check_finite=False)
    sm.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "adapter_config.json").read_text())
    assert not {"compile", "dense_below", "check_finite", "backend"} & set(saved)
    assert SeerFlexModel.from_pretrained(tiny_model("llama"), tmp_path / "new").runtime_options == RuntimeOptions()
    old = saved | {"compile": "eager", "dense_below": 5, "check_finite": False}  # what version 0.1 wrote
    (tmp_path / "new" / "adapter_config.json").write_text(json.dumps(old))
    legacy = SeerFlexModel.from_pretrained(tiny_model("llama"), tmp_path / "new")
    assert legacy.runtime_options == RuntimeOptions(compile="eager", dense_below=5, check_finite=False)
    given = SeerFlexModel.from_pretrained(tiny_model("llama"), tmp_path / "new", runtime=RuntimeOptions(dense_below=9))
    assert given.runtime_options.dense_below == 9  # what the caller asks for wins


def test_layers_read_the_shared_state_the_model_sets():
    sm = wrapped()
    layers = [s.active() for s in sm._states]
    sm.set_policy("topp:0.8")
    assert all(layer.policy == TopP(0.8) for layer in layers)
    sm.set_policy(Threshold(0.01), layers=[1])
    assert [layer.policy for layer in layers] == [TopP(0.8), Threshold(0.01)]
    sm.set_runtime(dense_below=4096)
    assert all(layer.runtime.options.dense_below == 4096 for layer in layers)
    sm.set_scorer("pooled")
    assert all(isinstance(layer.runtime.scorer, PooledQKScores) for layer in layers)
    with pytest.raises(ValueError, match="unknown scorer 'bm25'"):
        sm.set_scorer("bm25")
    with pytest.raises(ValueError, match="unknown runtime options"):
        sm.set_runtime(compiled="eager")
    with pytest.raises(ValueError, match="no gates"):
        sm.set_sparse_layers([7])


def test_sparse_layers_scorer_and_overrides_change_calls_and_are_restored():
    sm = wrapped()
    ids = torch.randint(0, 128, (1, 200))
    with torch.no_grad(), sm.track_sparsity() as records:
        sm(input_ids=ids)
    assert sorted(i for i, _ in records) == [0, 1]
    sm.set_sparse_layers([1])
    with torch.no_grad(), sm.track_sparsity() as records:
        sm(input_ids=ids)
    assert [i for i, _ in records] == [1]
    sm.set_sparse_layers(None)
    before = (sm.peft_config["default"].policy, sm.scorer, sm.sparse_layers, sm.runtime_options)
    with torch.no_grad(), sm.overrides(policy={0: TopK(density=1.0)}, scorer="recency", check_finite=False), \
            sm.track_sparsity() as records:
        assert sm.runtime_options.check_finite is False and sm.scorer is not None
        sm(input_ids=ids)
    assert [(i, s.mean_density) for i, s in records] == [(0, 1.0)]  # only the layer the dict names, at its policy
    assert (sm.peft_config["default"].policy, sm.scorer, sm.sparse_layers, sm.runtime_options) == before
    assert sm.peft_config["default"].layer_policies == {}
