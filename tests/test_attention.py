"""Adapter cross-attention: per-latent-frame (block-diagonal) SDPA, masks, precomputed K/V."""

import math

import pytest
import torch

from fantasyportrait_core import FantasyPortraitError, adapter_cross_attention, project_window_kv

T, L, W, HEADS, D, C = 3, 5, 7, 2, 8, 6


def naive(q, k, v, heads, mask=None):
    """Loop over batch, latent frame and head; softmax(q k^T / sqrt(d)) v with -inf masking."""
    b, tl, dim = q.shape
    t_lat = k.shape[1]
    per = tl // t_lat
    d = dim // heads
    out = torch.zeros_like(q)
    for bi in range(b):
        for t in range(t_lat):
            for h in range(heads):
                qs = q[bi, t * per:(t + 1) * per, h * d:(h + 1) * d]
                ks = k[bi, t, :, h * d:(h + 1) * d]
                vs = v[bi, t, :, h * d:(h + 1) * d]
                s = qs @ ks.T / math.sqrt(d)
                if mask is not None:
                    s = s.masked_fill(~mask[t], float("-inf"))
                p = torch.softmax(s, -1)
                p = torch.nan_to_num(p, nan=0.0)
                out[bi, t * per:(t + 1) * per, h * d:(h + 1) * d] = p @ vs
    return out


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, T * L, HEADS * D, generator=g, dtype=torch.float64)
    windows = torch.randn(2, T, W, C, generator=g, dtype=torch.float64)
    wk = torch.randn(HEADS * D, C, generator=g, dtype=torch.float64)
    wv = torch.randn(HEADS * D, C, generator=g, dtype=torch.float64)
    return q, windows, wk, wv


def test_matches_naive_per_frame_attention(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows, wk, wv)
    out = adapter_cross_attention(q, k, v, HEADS, scale=0.7)
    torch.testing.assert_close(out, 0.7 * naive(q, k, v, HEADS), rtol=1e-10, atol=1e-12)


def test_block_diagonal_frames_only_see_their_window(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows, wk, wv)
    base = adapter_cross_attention(q, k, v, HEADS)
    changed = windows.clone()
    changed[:, 1] += 5.0  # only latent frame 1's window
    k2, v2 = project_window_kv(changed, wk, wv)
    diff = (adapter_cross_attention(q, k2, v2, HEADS) - base).abs().amax(-1).reshape(2, T, L)
    assert torch.all(diff[:, 1] > 1e-6)
    assert torch.all(diff[:, 0] == 0) and torch.all(diff[:, 2] == 0)


def test_zero_padding_slots_take_part_as_zero_keys(data):
    """A zero window token has K = V = 0: it adds exp(0) to the softmax denominator (released)."""
    q, windows, wk, wv = data
    windows = windows.clone()
    windows[:, :, 3:] = 0
    k, v = project_window_kv(windows, wk, wv)
    assert torch.count_nonzero(k[:, :, 3:]) == 0 and torch.count_nonzero(v[:, :, 3:]) == 0
    full = adapter_cross_attention(q, k, v, HEADS)
    only_real = adapter_cross_attention(q, k[:, :, :3], v[:, :, :3], HEADS)
    assert not torch.allclose(full, only_real)  # zeros are not masked out
    torch.testing.assert_close(full, naive(q, k, v, HEADS))


def test_mask_matches_naive_and_empty_rows_are_zero(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows, wk, wv)
    mask = torch.rand(T, L, W, generator=torch.Generator().manual_seed(4)) > 0.4
    mask[1, 2] = False  # a query that may attend to nothing
    out = adapter_cross_attention(q, k, v, HEADS, mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, naive(q, k, v, HEADS, mask), rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(out[:, 1 * L + 2]) == 0
    assert torch.count_nonzero(out[:, 1 * L + 1]) > 0


def test_per_batch_scale_and_shared_kv(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows[:1], wk, wv)  # one set of K/V shared by both batch rows
    out = adapter_cross_attention(q, k, v, HEADS, scale=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out[0], naive(q[:1], k, v, HEADS)[0])
    assert torch.count_nonzero(out[1]) == 0


def test_precomputed_kv_is_reusable_across_steps(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows, wk, wv)
    for step in range(3):
        qs = q * (step + 1)
        fresh = adapter_cross_attention(qs, *project_window_kv(windows, wk, wv), HEADS)
        torch.testing.assert_close(adapter_cross_attention(qs, k, v, HEADS), fresh, rtol=0, atol=0)


def test_shape_errors_are_explained(data):
    q, windows, wk, wv = data
    k, v = project_window_kv(windows, wk, wv)
    with pytest.raises(FantasyPortraitError, match="does not split into 3 latent frames"):
        adapter_cross_attention(q[:, :-1], k, v, HEADS)
    with pytest.raises(FantasyPortraitError, match="does not fit this Wan model"):
        adapter_cross_attention(q[..., :-2], k, v, HEADS)
    with pytest.raises(FantasyPortraitError, match="mask has shape"):
        adapter_cross_attention(q, k, v, HEADS, mask=torch.ones(T, L, W + 1, dtype=torch.bool))
    with pytest.raises(FantasyPortraitError, match="channels"):
        project_window_kv(windows[..., :-1], wk, wv)
