"""Both ground-truth modes against an independent dense float64 attention map, on both routes.

The PyTorch route runs in-process; the Triton kernels run in Triton's CPU interpreter in a subprocess
(TRITON_INTERPRET must be set before triton is imported, and other tests import it normally).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seerflex.ground_truth as gt
import seerflex.ground_truth.reference as gt_reference
from seerflex.ground_truth import block_attention_map

ROOT = Path(__file__).resolve().parents[1]


def dense_block_map(q, k, bs, mode, valid=None, scale=None, qbs=None):
    """Full S x S float64 softmax with causal + padding masks, then per-tile max or block sums
    (tiles of ``qbs`` queries, default ``bs``, by ``bs`` keys)."""
    b, hq, s, d = q.shape
    kk = k.double().repeat_interleave(hq // k.shape[1], 1)
    scores = q.double() @ kk.transpose(-1, -2) * (d**-0.5 if scale is None else scale)
    pos = torch.arange(s)
    allowed = (pos[None, :] <= pos[:, None])[None, None]
    if valid is not None:
        allowed = allowed & valid[:, None, None, :] & valid[:, None, :, None]
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    qbs = qbs or bs
    n, nq = -(-s // bs), -(-s // qbs)
    out = torch.zeros(b, hq, nq, n, dtype=torch.float64)
    for i in range(nq):
        rows = slice(i * qbs, min(s, (i + 1) * qbs))
        for j in range(-(-min(s, (i + 1) * qbs) // bs)):
            tile = probs[:, :, rows, j * bs: min(s, (j + 1) * bs)]
            if mode == "max":
                out[:, :, i, j] = tile.amax((-1, -2))
            else:
                nq = valid[:, rows].sum(-1).clamp(min=1)[:, None] if valid is not None else tile.shape[2]
                out[:, :, i, j] = tile.sum((-1, -2)) / nq
    if mode == "max":
        out = out / out.sum(-1, keepdim=True).clamp(min=1e-300)
    return out


def dense_lse(q, k, valid=None, scale=None):
    """Row log-sum-exp as flex returns it: -inf on fully masked (padded) rows."""
    b, hq, s, d = q.shape
    kk = k.double().repeat_interleave(hq // k.shape[1], 1)
    scores = q.double() @ kk.transpose(-1, -2) * (d**-0.5 if scale is None else scale)
    allowed = torch.ones(s, s, dtype=torch.bool).tril()[None, None]
    if valid is not None:
        allowed = allowed & valid[:, None, None, :] & valid[:, None, :, None]
    return scores.masked_fill(~allowed, float("-inf")).logsumexp(-1).float()


def padding(b, s, pad):
    if pad is None:
        return None
    valid = torch.ones(b, s, dtype=torch.bool)
    cut = max(1, s // 3)
    if pad == "left":
        valid[-1, :cut] = False
    else:
        valid[-1, s - cut:] = False
    return valid


def check_map(out, ref, valid, bs):
    """Equal to the reference; zero above the diagonal; real rows sum to 1; padded-only blocks are zero rows."""
    b, hq, n, _ = ref.shape
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-6)
    assert (out.triu(1) == 0).all()
    if valid is None:
        real = torch.ones(b, n, dtype=torch.bool)
    else:
        padded = torch.nn.functional.pad(valid, (0, n * bs - valid.shape[1]))
        real = padded.view(b, n, bs).any(-1)
    real = real[:, None, :].expand(b, hq, n)
    sums = out.sum(-1)
    torch.testing.assert_close(sums[real], torch.ones_like(sums[real]), rtol=1e-5, atol=1e-5)
    assert (out[~real] == 0).all()


@pytest.mark.parametrize("mode", ["max", "mass"])
@pytest.mark.parametrize(("s", "bs", "ratio", "pad"), [(200, 16, 2, "left"), (131, 32, 4, "right"), (64, 32, 4, None),
                                                       (255, 32, 2, None)])
def test_query_blocks_larger_than_key_blocks_equal_dense_f64(s, bs, ratio, pad, mode, monkeypatch):
    """Rectangular tiles (query block = ratio x key block) against the direct float64 map."""
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    q, k = torch.randn(2, 4, s, 16), torch.randn(2, 2, s, 16)
    valid = padding(2, s, pad)
    out = block_attention_map(q, k, block_size=bs, q_block_size=bs * ratio, mode=mode, attention_mask=valid)
    ref = dense_block_map(q, k, bs, mode, valid, qbs=bs * ratio)
    assert out.shape == (2, 4, -(-s // (bs * ratio)), -(-s // bs))
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the key block size"):
        block_attention_map(q, k, block_size=bs, q_block_size=bs + 8)


CASES = [  # (S, block, Hq, Hkv, padding)
    (1, 64, 2, 2, None), (63, 64, 4, 1, None), (65, 32, 4, 1, "right"), (200, 64, 8, 2, "left"),
    (200, 32, 4, 1, "right"), (150, 64, 4, 4, "left"), (97, 32, 4, 1, "left"),
]


@pytest.mark.parametrize("given_lse", [False, True])
@pytest.mark.parametrize("mode", ["max", "mass"])
@pytest.mark.parametrize(("s", "bs", "hq", "hkv", "pad"), CASES)
def test_torch_route_equals_dense_f64(s, bs, hq, hkv, pad, mode, given_lse, monkeypatch):
    monkeypatch.setattr(gt_reference, "CHUNK_ELEMENTS", 4096)  # force several chunks
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    q, k = torch.randn(2, hq, s, 16) * 2, torch.randn(2, hkv, s, 16) * 2
    valid = padding(2, s, pad)
    lse = dense_lse(q, k, valid) if given_lse else None
    out = block_attention_map(q, k, block_size=bs, mode=mode, attention_mask=valid, lse=lse)
    check_map(out, dense_block_map(q, k, bs, mode, valid), valid, bs)


@pytest.mark.parametrize(("s", "bs", "ratio", "rows"), [(200, 16, 2, [6, 0, 3]), (131, 32, 1, [4]), (97, 32, 4, [])])
def test_a_sample_of_rows_equals_those_rows_of_the_full_map(s, bs, ratio, rows, monkeypatch):
    """``rows`` computes just those query blocks (the fine-tune's sampled gate target); the rest is zero."""
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    q, k, valid = torch.randn(2, 4, s, 16), torch.randn(2, 2, s, 16), padding(2, s, "left")
    for mode in ("max", "mass"):
        out = block_attention_map(q, k, block_size=bs, q_block_size=bs * ratio, mode=mode, attention_mask=valid,
                                  rows=torch.tensor(rows, dtype=torch.long))
        ref = dense_block_map(q, k, bs, mode, valid, qbs=bs * ratio)
        picked = torch.zeros(ref.shape[2], dtype=torch.bool)
        picked[rows] = True
        torch.testing.assert_close(out[:, :, picked].double(), ref[:, :, picked], rtol=1e-4, atol=1e-6)
        assert (out[:, :, ~picked] == 0).all()
    for bad, match in [(torch.tensor([0, 99]), r"rows must lie in \[0, "), (torch.tensor([0.5]), "integer"),
                       (torch.tensor([[1]]), "1-D")]:
        with pytest.raises(ValueError, match=match):
            block_attention_map(q, k, block_size=bs, rows=bad)
    nan_q = q.clone()
    nan_q[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        block_attention_map(nan_q, k, block_size=bs)
    block_attention_map(nan_q, k, block_size=bs, check_finite=False)  # the caller checks its loss instead


def test_integer_mask_scale_float64_and_non_contiguous_q(monkeypatch):
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    s = 130
    q = torch.randn(2, s, 4, 32).transpose(1, 2)  # HF layout [B, S, H, D] seen as [B, H, S, D]
    k = torch.randn(2, 2, s, 32)
    valid = padding(2, s, "left")
    for mode in ("max", "mass"):
        out = block_attention_map(q, k, mode=mode, scale=0.3, attention_mask=valid.long())
        check_map(out, dense_block_map(q, k, 64, mode, valid, scale=0.3), valid, 64)
        out64 = block_attention_map(q.double(), k.double(), mode=mode, scale=0.3, attention_mask=valid)
        torch.testing.assert_close(out64.double(), dense_block_map(q, k, 64, mode, valid, scale=0.3),
                                   rtol=5e-7, atol=1e-12)  # float32 rounding only


def test_lse_junk_on_padded_rows_is_ignored(monkeypatch):
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    q, k = torch.randn(2, 4, 100, 16), torch.randn(2, 1, 100, 16)
    valid = padding(2, 100, "right")
    lse = dense_lse(q, k, valid)
    for junk in (float("-inf"), float("inf"), float("nan"), 3.0):
        lse_j = lse.masked_fill(~valid[:, None, :], junk)
        for mode in ("max", "mass"):
            out = block_attention_map(q, k, mode=mode, attention_mask=valid, lse=lse_j)
            check_map(out, dense_block_map(q, k, 64, mode, valid), valid, 64)


def test_chunks_stay_bounded_and_no_grad(monkeypatch):
    """Each torch chunk sees block_size query rows (never S x S) when the budget is small."""
    monkeypatch.setattr(gt_reference, "CHUNK_ELEMENTS", 1)
    monkeypatch.setenv(gt.BACKEND_ENV, "torch")
    rows = []
    real = gt_reference.chunk_map
    monkeypatch.setattr(gt_reference, "chunk_map", lambda q, *a: rows.append(q.shape[3]) or real(q, *a))
    q = torch.randn(1, 2, 200, 16, requires_grad=True)
    k = torch.randn(1, 2, 200, 16, requires_grad=True)
    out = block_attention_map(q, k, block_size=32)
    assert rows == [32] * 6 + [8]
    assert not out.requires_grad


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "mean"}, "mode"),
    ({"block_size": 0}, "block_size"),
    ({"attention_mask": torch.ones(1, 5)}, "attention_mask"),
    ({"lse": torch.zeros(1, 4, 3)}, "lse"),
    ({"lse": torch.full((1, 4, 64), float("nan"))}, "lse"),
    ({"scale": float("nan")}, "scale"),
])
def test_bad_arguments_raise(kwargs, message):
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 2, 64, 16)
    with pytest.raises(ValueError, match=message):
        block_attention_map(q, k, **kwargs)


def test_bad_tensors_raise():
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 2, 64, 16)
    with pytest.raises(ValueError, match="multiple"):
        block_attention_map(q, torch.randn(1, 3, 64, 16))
    with pytest.raises(ValueError, match=r"\[B, Hq, S, D\]"):
        block_attention_map(q[0], k[0])
    with pytest.raises(ValueError, match=r"\[B, Hq, S, D\]"):
        block_attention_map(q, torch.randn(1, 2, 63, 16))
    with pytest.raises(ValueError, match="dtype"):
        block_attention_map(q, k.double())
    for bad in (float("nan"), float("inf")):
        q2, k2 = q.clone(), k.clone()
        q2[0, 1, 17, 3] = bad
        k2[0, 1, 40, 5] = -bad
        with pytest.raises(ValueError, match="finite"):
            block_attention_map(q2, k)
        with pytest.raises(ValueError, match="finite"):
            block_attention_map(q, k2)


# ---------------------------------------------------------------- Triton kernels, CPU interpreter

INTERPRETER_SCRIPT = r"""
import json, sys
import numpy as np
import torch
import triton.runtime.interpreter as ti

try:  # triton 3.6's interpreter does int() on 1-element arrays, which numpy >= 2.4 refuses
    int(np.array([1]))
except TypeError:
    _orig = ti._patch_lang_tensor

    def _patched(tensor, scope):
        _orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti._patch_lang_tensor = _patched

sys.path.insert(0, sys.argv[1])
from test_ground_truth import dense_block_map, dense_lse, padding
from seerflex.ground_truth import block_attention_map, normalise, triton_block_map

torch.manual_seed(int(sys.argv[2]))
results = []
cases = [  # S, block, Hq, Hkv, padding, given lse, lse tiles (None: the public function), non-contiguous q
    (160, 64, 4, 1, "left", False, None, True), (65, 32, 4, 1, "right", True, None, False),
    (97, 32, 2, 2, "left", False, (32, 16), False), (1, 64, 2, 1, None, False, None, False),
    (50, 16, 2, 1, "right", False, (32, 16), False),
]
for s, bs, hq, hkv, pad, given, tiles, transposed in cases:
    q = torch.randn(2, s, hq, 16).transpose(1, 2) if transposed else torch.randn(2, hq, s, 16)
    k = torch.randn(2, hkv, s, 16)
    valid = padding(2, s, pad)
    lse = dense_lse(q, k, valid) if given else None
    for mode in ("max", "mass"):
        if tiles is None:  # the public function, routed to the kernels by SEERFLEX_GT_BACKEND=triton
            out = block_attention_map(q, k, block_size=bs, mode=mode, attention_mask=valid, lse=lse)
        else:  # several lse tiles per query block: exercises the diagonal loop
            out = triton_block_map(q, k, valid, lse, 16**-0.5, bs, mode,
                                   lse_config={"BLOCK_M": tiles[0], "BLOCK_N": tiles[1]})
            out = normalise(out) if mode == "max" else out  # the kernels return raw tile maxima
        ref = dense_block_map(q, k, bs, mode, valid)
        results.append({"case": [s, bs, hq, hkv, pad, given, mode], "err": (out.double() - ref).abs().max().item(),
                        "finite": bool(torch.isfinite(out).all()), "upper_zero": bool((out.triu(1) == 0).all()),
                        "row_sums": out.sum(-1).flatten().tolist()})
# a sample of rows (query blocks of 2 key blocks, so the lse row blocks and map rows differ), others zero
q, k, valid = torch.randn(2, 4, 230, 16), torch.randn(2, 2, 230, 16), padding(2, 230, "left")
rows = torch.tensor([3, 0, 2])
out = block_attention_map(q, k, block_size=16, q_block_size=32, mode="mass", attention_mask=valid, rows=rows)
ref = dense_block_map(q, k, 16, "mass", valid, qbs=32)
picked = torch.zeros(ref.shape[2], dtype=torch.bool)
picked[rows] = True
sampled = {"err": (out.double() - ref)[:, :, picked].abs().max().item(), "others_zero": bool((out[:, :, ~picked] == 0).all())}
# key blocks of 128 > the lse kernel's 64-query row blocks (float32): each map row needs two lse row blocks
q, k = torch.randn(1, 2, 300, 16), torch.randn(1, 1, 300, 16)
out = block_attention_map(q, k, block_size=128, mode="max", rows=torch.tensor([2, 0]))
ref = dense_block_map(q, k, 128, "max")
sampled["err"] = max(sampled["err"], (out.double() - ref)[:, :, [0, 2]].abs().max().item())
sampled["others_zero"] &= bool((out[:, :, 1] == 0).all())
print("RESULTS" + json.dumps(results) + "SAMPLED" + json.dumps(sampled))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_in_interpreter_equal_dense_f64(tmp_path):
    env = os.environ | {"TRITON_INTERPRET": "1", gt.BACKEND_ENV: "triton",
                        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    seed = torch.randint(0, 2**31 - 1, ()).item()
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_SCRIPT, str(Path(__file__).parent), str(seed)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, sampled = proc.stdout.split("RESULTS", 1)[1].split("SAMPLED")
    results, sampled = json.loads(results), json.loads(sampled)
    assert sampled["err"] < 1e-5 and sampled["others_zero"], sampled
    assert len(results) == 10
    for r in results:
        assert r["finite"] and r["upper_zero"], r["case"]
        assert r["err"] < 1e-5, r["case"]
        assert all(abs(x - 1) < 1e-5 or x == 0 for x in r["row_sums"]), r["case"]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_compile_for_h100():
    """Ahead-of-time compile for sm_90 (no GPU needed), with the specialisations a real launch makes:
    catches kernel edits that only the GPU compiler rejects."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptrs = {"Q": "bf16", "K": "bf16", "Mask": "i8", "Lse2": "fp32", "Out": "fp32", "Rows": "i32"}
    common = {"HEAD_D": 128, "BLOCK_D": 128, "FP32": False, "HAS_MASK": True, "sqd": 1, "skd": 1, "sms": 1}
    kernels = gt.triton_kernels
    for fn, extra, cfg in [(kernels._lse_kernel, {"HAS_ROWS": rows}, kernels._default_lse_config(128, torch.bfloat16))
                           for rows in (False, True)] + [
                           (kernels._map_kernel, {"MODE_MAX": True, "BS": 64, "HAS_ROWS": rows},
                            kernels._default_map_config(128, 64, torch.bfloat16)) for rows in (False, True)]:
        consts = common | extra | {key: cfg[key] for key in ("BLOCK_M", "BLOCK_N") if key in cfg}
        signature = {name: "constexpr" if name in consts else "*" + ptrs[name] if name in ptrs
                     else "fp32" if name == "qk_scale" else "i32" for name in fn.arg_names}
        aligned = [name for name in [*ptrs, "sqb", "sqh", "sqs", "skb", "skh", "sks"] if name in fn.arg_names]
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
        kernel = triton.compile(ASTSource(fn, signature, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
        assert "wgmma" in kernel.asm["ptx"]  # Hopper tensor-core path
        assert "async_copy_global_to_local" in kernel.asm["ttgir"]  # K loads software-pipelined
