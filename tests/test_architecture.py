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
