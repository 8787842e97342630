"""The fine-tune recipe under FSDP2: two gloo processes on the CPU run it unchanged through accelerate's own FSDP2
preparation (fully_shard per decoder layer); it trains as DDP does, its checkpoints hold the whole state and resume
exactly (in two processes or in one), and its export is gathered. Plus the one-process checkpoint format and the
launches it refuses.

accelerate never shards on a CPU (its state picks MULTI_CPU), so the worker sets the state accelerate sets for
``accelerate launch --use_fsdp --fsdp_version 2`` on GPUs; everything after that is accelerate's and the recipe's."""

from __future__ import annotations

import json
import os
import shutil
import socket
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from models import CharTokenizer, small_llama
from seerflex.recipes.finetune import FinetuneRecipe, gather_state, restore_state, train

SEERFLEX = {"block_size": 32, "gate_hidden_size": 16, "policy": "topk:0.3:local=1"}


class Stop(Exception):
    """Raised on every rank right after the step-2 checkpoint: a kill that leaves no rank waiting."""


def recipe(root, name, text, **kw) -> FinetuneRecipe:
    return FinetuneRecipe(**{"model": "unused", "data": str(text), "seq_len": 256, "batch_size": 1, "steps": 4,
                             "lr": 1e-2, "gate_lr": 1e-2, "warmup_steps": 1, "schedule_steps": 3, "density": 0.3,
                             "rope_factor": 2.0, "checkpoint_every": 2, "output_dir": str(root / name),
                             "lora": {"r": 4, "alpha": 8}, "seerflex": SEERFLEX} | kw)


def _worker(rank: int, port: int, root, text) -> None:
    """One of two processes: a DDP run, an FSDP2 run, and an FSDP2 run stopped after its step-2 checkpoint (its
    sharded state checked against the checkpoint, its folder copied for a one-process resume) and resumed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import accelerate
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.tensor import DTensor

    import seerflex.recipes.finetune as finetune

    fsdp, optimizers = [False], []

    class Accelerator(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if fsdp[0]:  # as AcceleratorState does for FSDP on GPUs, in both of its shared states
                self.state.distributed_type = DistributedType.FSDP
                accelerate.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
                    fsdp_version=2, auto_wrap_policy="transformer_based_wrap")

    class AdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    accelerate.Accelerator, torch.optim.AdamW = Accelerator, AdamW
    train(recipe(root, "ddp", text), small_llama(), CharTokenizer())
    fsdp[0] = True
    train(recipe(root, "fsdp", text), small_llama(), CharTokenizer())

    end_step = finetune.end_step

    def stop_after_step_2(accelerator, recipe, metrics, row, save):
        end_step(accelerator, recipe, metrics, row, save)
        if row["step"] == 2:
            raise Stop

    finetune.end_step, model = stop_after_step_2, small_llama()
    with pytest.raises(Stop):
        train(recipe(root, "resumed", text), model, CharTokenizer())
    finetune.end_step = end_step
    torch.distributed.barrier()  # rank 0 has written the checkpoint
    tensors = load_file(str(root / "resumed" / "checkpoint" / "gates.safetensors"))
    saved = torch.load(root / "resumed" / "checkpoint" / "state.pt", weights_only=True)["optimizer"]
    name = {p: n for n, p in model.named_parameters()}  # the base model's names: the checkpoint's end in them
    flat = [p for group in optimizers[-1].param_groups for p in group["params"]]
    assert len(flat) == len(tensors) == len(saved["state"]) and all(isinstance(p, DTensor) for p in flat)
    assert any(p.to_local().numel() < p.numel() for p in flat)  # really sharded
    for i, p in enumerate(flat):  # full_tensor() gathers: every rank walks the same order
        key = [k for k in tensors if k.endswith("." + name[p])]
        assert len(key) == 1 and torch.equal(p.full_tensor(), tensors[key[0]]), name[p]
        state = optimizers[-1].state[p]
        assert torch.equal(state["step"], saved["state"][i]["step"])
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[moment].full_tensor(), saved["state"][i][moment]), (name[p], moment)
    if rank == 0:
        shutil.copytree(root / "resumed", root / "one_process")
    torch.distributed.barrier()
    train(recipe(root, "resumed", text, resume=True), small_llama(), CharTokenizer())


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("".join(f"Chapter {i}. It is a truth universally acknowledged, number {i * 7}. " for i in range(80)))
    return f


def test_fsdp2_trains_as_ddp_and_its_whole_state_checkpoints_resume_exactly(tmp_path, text_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(port, tmp_path, text_file), nprocs=2)
    # the step-2 checkpoint of the two-process FSDP run, resumed by one process with the same two sequences a step
    train(recipe(tmp_path, "one_process", text_file, batch_size=2, resume=True), small_llama(), CharTokenizer())

    def losses(name):
        return [json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    def tensors(name, file):
        return load_file(str(tmp_path / name / file))

    assert [json.loads((tmp_path / n / "recipe.json").read_text())["distributed"] for n in ("ddp", "fsdp")] == \
        ["MULTI_CPU", "FSDP"]
    assert len(losses("fsdp")) == 4 and losses("resumed") == losses("fsdp")  # the same loss curve, exactly
    torch.testing.assert_close(losses("fsdp"), losses("ddp"), rtol=1e-5, atol=0)
    for file in ("checkpoint/gates.safetensors", "export/seerflex/adapter_model.safetensors",
                 "export/lora/adapter_model.safetensors", "export/model/model.safetensors"):
        fsdp, resumed, ddp = (tensors(n, file) for n in ("fsdp", "resumed", "ddp"))
        assert fsdp.keys() == resumed.keys() == ddp.keys() and all(torch.equal(fsdp[k], resumed[k]) for k in fsdp)
        for k in fsdp:  # the export is the trained model, gathered: as DDP's
            torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-5, atol=1e-6)
    one, fsdp = (tensors(n, "checkpoint/gates.safetensors") for n in ("one_process", "fsdp"))
    assert one.keys() == fsdp.keys()  # trained on as the two processes did (their logged loss is rank 0's alone)
    for k in fsdp:
        torch.testing.assert_close(one[k], fsdp[k], rtol=1e-5, atol=1e-6)
    start = small_llama().state_dict()  # and not the untrained weights the shards replaced
    merged = tensors("fsdp", "export/model/model.safetensors")
    assert any(not torch.equal(merged[k], start[k]) for k in start if k.endswith("q_proj.weight"))


def test_one_process_checkpoints_keep_the_optimizers_own_format():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)
    names = ["1.weight", "1.bias", "0.weight"]  # the optimizer's order, not the model's
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([{"params": [params[n] for n in names[:2]]}, {"params": [params[names[2]]],
                                                                                 "lr": 0.1}])
    model(torch.randn(3, 4)).square().sum().backward()
    params["1.bias"].grad = None  # no gradient yet (as a part the loss has not reached): no optimizer state
    optimizer.step()
    assert params["1.bias"] not in optimizer.state
    tensors, optim = gather_state(model, optimizer, names)
    assert list(tensors) == names and all(torch.equal(tensors[n], params[n]) for n in names)
    assert_same_optimizer_state(optim, optimizer.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    fresh[0].bias.requires_grad_(False)
    again = dict(fresh.named_parameters())
    second = torch.optim.AdamW([{"params": [again[n] for n in names[:2]]}, {"params": [again[names[2]]], "lr": 0.1}])
    restore_state(fresh, second, names, tensors, optim)
    assert all(torch.equal(again[n], params[n]) for n in names)
    assert not torch.equal(fresh[0].bias, model[0].bias)  # frozen: not in the checkpoint, not touched
    assert_same_optimizer_state(second.state_dict(), optimizer.state_dict())
    assert again["1.bias"] not in second.state  # not a placeholder state: resume stays exact


def assert_same_optimizer_state(got, expected):
    """Equal tensors and hyper-parameters (a state restored through torch.distributed.checkpoint holds ``betas`` as a
    list, not a tuple)."""
    torch.testing.assert_close(got["state"], expected["state"], rtol=0, atol=0)
    assert [g | {"betas": tuple(g["betas"])} for g in got["param_groups"]] == expected["param_groups"]


def test_fsdp_launches_the_recipe_cannot_run_are_refused_with_one_line(tmp_path, text_file, monkeypatch):
    from accelerate.utils import DistributedType

    from seerflex.recipes.common import check_world

    monkeypatch.setenv("WORLD_SIZE", "2")

    def launch(engine, version=2):
        return SimpleNamespace(num_processes=2, distributed_type=engine,
                               state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=version)))

    check_world(launch(DistributedType.FSDP), sharded=True)  # the fine-tune gathers FSDP2's shards
    with pytest.raises(ValueError, match="FSDP1 is not supported.*--fsdp_version 2"):
        check_world(launch(DistributedType.FSDP, version=1), sharded=True)
    with pytest.raises(ValueError, match="FSDP is not supported yet"):  # distill does not gather
        check_world(launch(DistributedType.FSDP))
    with pytest.raises(ValueError, match="DEEPSPEED is not supported yet"):
        check_world(launch(DistributedType.DEEPSPEED), sharded=True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate on a CPU: it runs DDP instead
    with pytest.raises(ValueError, match="FSDP was asked for .* but accelerate runs MULTI_CPU"):
        check_world(launch(DistributedType.MULTI_CPU), sharded=True)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="FSDP was asked for .* but accelerate runs NO"):
        train(recipe(tmp_path, "run", text_file), small_llama(), CharTokenizer())
