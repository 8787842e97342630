"""The house rules: the library never imports the recipes, no import cycles, one compile decision."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import seerflex.compile
from seerflex import RuntimeOptions, SeerFlexConfig, SeerFlexAttention, TopK
from seerflex.runtime import Runtime

PACKAGE = Path(seerflex.compile.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """seerflex module -> seerflex modules it imports anywhere in its body (lazy imports included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seerflex"):
                for alias in node.names:  # "from seerflex.x import y" may name the submodule x.y
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("seerflex"))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_library_never_imports_recipes():
    offenders = {m: sorted(i for i in deps if i.startswith("seerflex.recipes"))
                 for m, deps in imports().items()
                 if not m.startswith("seerflex.recipes") and m != "seerflex.cli"}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_no_import_cycles_between_modules():
    """Package __init__ files only hand names on, so an edge into a package is an edge into what it re-exports."""
    graph = imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.fixture
def counted_compiles(monkeypatch):
    """torch.compile replaced by a counter of what seerflex compiles (torch's own eager flex compiles
    an internal wrapper, which is not counted); it returns the function unchanged."""
    calls: list[str] = []
    flex = torch.nn.attention.flex_attention.flex_attention

    def fake_compile(fn, **kwargs):
        if fn is flex or getattr(fn, "__module__", "").startswith("seerflex"):
            calls.append(fn.__name__)
        return fn

    seerflex.compile._compile.cache_clear()
    monkeypatch.setattr(torch, "compile", fake_compile)
    yield calls
    seerflex.compile._compile.cache_clear()


@pytest.mark.parametrize(("mode", "expected"), [
    ("eager", []), ("auto", []),  # auto is eager on a CPU
    ("dynamic", ["attend"]),  # inference: gate, policy, indices, BlockMask and flex as one graph (seerflex/plan.py)
])
def test_one_compile_decision_for_gate_policy_indices_and_flex(mode, expected, counted_compiles):
    """What compiles follows the runtime mode alone."""
    layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.3), block_size=32), 4, 2, 16,
                              runtime=Runtime(RuntimeOptions(compile=mode, dense_below=0)))
    q, k, v = (torch.randn(1, h, 200, 16) for h in (4, 2, 2))
    with torch.no_grad():
        layer(q, k, v)
    assert sorted(counted_compiles) == expected


def test_cuda_graphs_replay_only_the_fused_layer_graph_and_only_on_cuda(monkeypatch):
    """``RuntimeOptions(cuda_graphs=True)`` asks inductor for CUDA-graph trees (reduce-overhead) for the fused layer
    graph on CUDA; on a CPU the same call compiles as before, and a non-bool option is refused."""
    modes: dict[str, str | None] = {}

    def fake_compile(fn, **kwargs):
        modes[fn.__name__] = kwargs.get("mode")
        return fn

    seerflex.compile._compile.cache_clear()
    monkeypatch.setattr(torch, "compile", fake_compile)
    try:
        import seerflex.plan as plan
        for device, want in ((torch.device("cuda"), "reduce-overhead"), (torch.device("cpu"), None)):
            modes.clear()
            seerflex.compile._compile.cache_clear()
            seerflex.compile.compiled(plan.attend, "dynamic", device, dynamic=True, graphs=True)
            seerflex.compile.compiled(plan.plan, "dynamic", device)
            assert modes == {"attend": want, "plan": None}
        layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.3), block_size=32), 4, 2, 16,
                                  runtime=Runtime(RuntimeOptions(compile="dynamic", dense_below=0, cuda_graphs=True)))
        modes.clear()
        seerflex.compile._compile.cache_clear()
        asked = []
        real = plan.compiled
        monkeypatch.setattr(plan, "compiled", lambda fn, *a, **kw: (asked.append((fn.__name__, kw.get("graphs"))),
                                                                    real(fn, *a, **kw))[1])
        with torch.no_grad():
            layer(*(torch.randn(1, h, 200, 16) for h in (4, 2, 2)))
        assert asked == [("attend", True)]  # the layer asks for graphs for its fused graph ...
        assert modes["attend"] is None  # ... which a CPU call compiles as before, without CUDA graphs
    finally:
        seerflex.compile._compile.cache_clear()
    with pytest.raises(ValueError, match="cuda_graphs must be True or False"):
        RuntimeOptions(cuda_graphs="yes")


def test_eager_never_compiles_even_on_cuda_devices():
    cuda = torch.device("cuda")
    assert not seerflex.compile.compiles("eager", cuda)
    assert seerflex.compile.compiles("auto", cuda) and not seerflex.compile.compiles("auto", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown compile mode"):
        seerflex.compile.compiles("fast", cuda)


def test_kernel_backend_choice(monkeypatch):
    """auto takes FLASH only where it runs and fits the call; flash insists or says why; triton is triton."""
    import seerflex.flex as flex

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(flex, "flash_unavailable", lambda device: None if device.type == "cuda" else "it needs a CUDA GPU")
    assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=True) == "flash"
    assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=False) == "triton"  # padded route, score_mod
    assert flex.kernel_backend("auto", cuda, compiled=False, plain_mask=True) == "triton"  # eager
    assert flex.kernel_backend("triton", cuda, compiled=True, plain_mask=True) == "triton"
    assert flex.kernel_options(cuda, 128, (64, 64), "flash") == {"BACKEND": "FLASH"}
    assert flex.kernel_options(cuda, 128, (64, 64), "triton")["BLOCK_M"] == 64
    assert flex.kernel_options(cuda, 128, (128, 64), "triton")["BLOCK_M"] == 128  # query tiles follow query blocks
    with pytest.raises(ValueError, match="'flash' cannot run here: it needs a CUDA GPU"):
        flex.kernel_backend("flash", cpu, compiled=True, plain_mask=True)
    with pytest.raises(ValueError, match="runs only compiled"):
        flex.kernel_backend("flash", cuda, compiled=False, plain_mask=True)
    monkeypatch.setattr(flex, "flash_unavailable", lambda device: "flash-attn-4 is not installed")
    assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=True) == "triton"


def test_training_calls_take_flash_only_on_blocks_its_backward_takes(monkeypatch):
    """FA4's block-sparse backward runs 128 x 128 blocks only (H200, 2026-12-01): with flash-attn-4 installed, a
    64-token fine-tune under "auto" crashed in its first backward; now auto trains those on Triton."""
    import seerflex.flex as flex

    cuda = torch.device("cuda")
    monkeypatch.setattr(flex, "flash_unavailable", lambda device: None)
    for block, expected in (((64, 64), "triton"), ((128, 64), "triton"), ((128, 128), "flash"), ((256, 128), "flash")):
        assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=True, block_size=block,
                                   backward=True) == expected
        assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=True, block_size=block) == "flash"
    with pytest.raises(ValueError, match="backward needs 128 x 128 blocks, these are 64 x 64"):
        flex.kernel_backend("flash", cuda, compiled=True, plain_mask=True, block_size=(64, 64), backward=True)


def test_triton_forward_options_leave_the_backward_its_own_pipelining(monkeypatch):
    """Unprefixed num_warps / num_stages pin the backward's too (torch's flex lowering applies them to both)."""
    import seerflex.flex as flex

    options = flex.kernel_options(torch.device("cuda"), 64, (64, 64), "triton")
    assert not {"num_warps", "num_stages"} & set(options) and options["fwd_num_stages"] == 2
    from torch._inductor.choices import InductorChoices

    monkeypatch.setattr(InductorChoices, "get_flex_attention_bwd_configs", lambda *a, **k: [])  # no GPU to ask
    tiles = flex._small_backward_tiles()()
    head64 = tiles.get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda")
    head128 = tiles.get_flex_attention_bwd_configs(128, torch.bfloat16, "cuda")
    assert any((c.block_m1, c.block_n2, c.num_stages, c.num_warps) == (64, 64, 3, 4) for c in head64)
    assert any((c.block_m1, c.block_n2, c.num_stages) == (64, 64, 2) for c in head128)


def test_flash_without_its_dsl_is_not_installed(monkeypatch):
    """flash_attn importable but cutlass missing (a --target install without its .pth) failed only at compile."""
    import importlib.util

    import seerflex.flex as flex

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn.cute" else None if name == "cutlass"
                        else real(name, *a))
    unavailable = flex.flash_unavailable.__wrapped__  # uncached
    assert "not installed" in unavailable(torch.device("cuda"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert unavailable(torch.device("cuda")) is None


def test_flash_is_unavailable_on_this_cpu_and_the_layer_says_so():
    from seerflex.flex import flash_unavailable

    assert flash_unavailable(torch.device("cpu")) == "it needs a CUDA GPU"
    layer = SeerFlexAttention(SeerFlexConfig(block_size=32), 4, 2, 16,
                              runtime=Runtime(RuntimeOptions(backend="flash", dense_below=0)))
    with pytest.raises(ValueError, match="kernel backend 'flash' cannot run here"):
        layer(*(torch.randn(1, h, 128, 16) for h in (4, 2, 2)))


def test_with_a_baseline_scorer_the_policy_and_indices_compile_apart(counted_compiles):
    from seerflex.scorers import PooledQKScores

    runtime = Runtime(RuntimeOptions(compile="dynamic", dense_below=0), scorer=PooledQKScores())
    layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.3), block_size=32), 4, 2, 16, runtime=runtime)
    with torch.no_grad():
        layer(*(torch.randn(1, h, 200, 16) for h in (4, 2, 2)))
    assert sorted(counted_compiles) == ["flex_attention", "select_blocks", "selection_indices"]
