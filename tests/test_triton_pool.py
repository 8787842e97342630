"""The Triton block-pooling op (CUDA inference path of the gate) against PyTorch pooling in float64, run in
Triton's CPU interpreter in a subprocess (TRITON_INTERPRET must be set before triton is imported)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, torch
from seerflex.gates.pooling import block_pool
from seerflex.gates.triton_pool import block_pool_op

torch.manual_seed(int(sys.argv[1]))
worst = 0.0
for pools, bs, (b, h, n, d), dtype, transposed in [
    ("max,min,avg", 16, (2, 3, 5, 32), torch.float32, False), ("avg", 32, (1, 4, 3, 16), torch.float32, True),
    ("avg,max", 16, (2, 2, 4, 64), torch.bfloat16, True), ("min", 64, (1, 1, 2, 16), torch.float32, False)]:
    x = torch.randn(b, n * bs, h, d, dtype=dtype).transpose(1, 2) if transposed else torch.randn(b, h, n * bs, d, dtype=dtype)
    out = block_pool_op(x, pools, bs)
    ref = block_pool(x.double(), tuple(pools.split(",")), bs, None)
    assert out.dtype == dtype and out.shape == ref.shape, (out.shape, ref.shape)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    err = float((out.double() - ref).abs().max())
    assert err < tol, (pools, bs, err)
    worst = max(worst, err)
x = torch.randn(1, 2, 64, 16)
x[0, 1, 5, 3] = float("nan")
out = block_pool_op(x, "max,min,avg", 32)
assert out[0, 1, 0, [3, 19, 35]].isnan().all() and not out[0, 0].isnan().any()  # NaN reaches every pool, like torch
print("OK", worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_block_pool_equals_torch_pooling_f64(tmp_path):
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    seed = str(__import__("torch").randint(0, 2**31 - 1, ()).item())
    proc = subprocess.run([sys.executable, "-c", SCRIPT, seed], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]

