"""Both ground-truth modes against a dense float64 computation of the full attention map."""

from __future__ import annotations

import pytest
import torch

import seerflex.ground_truth as gt
from seerflex.ground_truth import block_attention_map


def dense_block_map(q, k, bs, mode, valid=None):
    b, hq, s, d = q.shape
    kk = k.double().repeat_interleave(hq // k.shape[1], 1)
    scores = q.double() @ kk.transpose(-1, -2) * d**-0.5
    pos = torch.arange(s)
    allowed = (pos[None, :] <= pos[:, None])[None, None]
    if valid is not None:
        allowed = allowed & valid[:, None, None, :] & valid[:, None, :, None]
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    n = -(-s // bs)
    out = torch.zeros(b, hq, n, n, dtype=torch.float64)
    for i in range(n):
        rows = slice(i * bs, min(s, (i + 1) * bs))
        for j in range(i + 1):
            tile = probs[:, :, rows, j * bs: min(s, (j + 1) * bs)]
            if mode == "max":
                out[:, :, i, j] = tile.amax((-1, -2))
            else:
                nq = valid[:, rows].sum(-1).clamp(min=1)[:, None] if valid is not None else tile.shape[2]
                out[:, :, i, j] = tile.sum((-1, -2)) / nq
    if mode == "max":
        out = out / out.sum(-1, keepdim=True).clamp(min=1e-300)
    return out


@pytest.mark.parametrize("mode", ["max", "mass"])
@pytest.mark.parametrize(("s", "bs", "hq", "hkv", "pad"), [
    (1, 64, 2, 2, None), (63, 64, 4, 1, None), (65, 32, 4, 2, None), (200, 64, 8, 2, "left"), (150, 32, 4, 4, "right"),
])
def test_block_map_equals_dense_f64(mode, s, bs, hq, hkv, pad, monkeypatch):
    monkeypatch.setattr(gt, "CHUNK_ELEMENTS", 4096)  # force several chunks
    q, k = torch.randn(2, hq, s, 16), torch.randn(2, hkv, s, 16)
    valid = None
    if pad:
        valid = torch.ones(2, s, dtype=torch.bool)
        cut = s // 3
        valid[1, :cut] = False if pad == "left" else True
        if pad == "right":
            valid[1, s - cut:] = False
    out = block_attention_map(q, k, block_size=bs, mode=mode, attention_mask=valid)
    ref = dense_block_map(q, k, bs, mode, valid)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-6)
    n = out.shape[-1]
    assert (out.triu(1) == 0).all()
    real_rows = ref.sum(-1) > 0
    torch.testing.assert_close(out.sum(-1)[real_rows].double(), torch.ones(int(real_rows.sum()), dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all() and out.shape == (2, hq, n, n)


def test_given_lse_gives_the_same_map():
    q, k = torch.randn(1, 4, 130, 16), torch.randn(1, 2, 130, 16)
    kk = k.repeat_interleave(2, 1)
    scores = (q @ kk.transpose(-1, -2) / 4).masked_fill(~torch.ones(130, 130, dtype=torch.bool).tril(), float("-inf"))
    lse = scores.logsumexp(-1)
    for mode in ("max", "mass"):
        torch.testing.assert_close(block_attention_map(q, k, mode=mode, lse=lse), block_attention_map(q, k, mode=mode))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "mean"}, "mode"),
    ({"attention_mask": torch.ones(1, 5)}, "attention_mask"),
    ({"lse": torch.zeros(1, 4, 3)}, "lse"),
])
def test_bad_inputs_raise(kwargs, message):
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 2, 64, 16)
    with pytest.raises(ValueError, match=message):
        block_attention_map(q, k, **kwargs)
    with pytest.raises(ValueError, match="multiple"):
        block_attention_map(q, torch.randn(1, 3, 64, 16))
    q[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        block_attention_map(q, k)
