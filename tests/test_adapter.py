"""Expression-token encoder: token order and values against an independent reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from checkpoint_factory import flatten
from fantasyportrait_core import FantasyPortraitError, GroupScales, adapter_from_state_dict


def ref_layernorm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def ref_resampler(sd, x, heads):
    """Perceiver resampler written from the released formula (scale 1/d^(1/4) on q and k)."""
    lat = sd["latents"].expand(x.shape[0], -1, -1)
    x = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for i in range(depth):
        p = f"layers.{i}."
        xn = ref_layernorm(x, sd[p + "0.norm1.weight"], sd[p + "0.norm1.bias"])
        ln = ref_layernorm(lat, sd[p + "0.norm2.weight"], sd[p + "0.norm2.bias"])
        q = ln @ sd[p + "0.to_q.weight"].T
        kv = torch.cat([xn, ln], dim=1) @ sd[p + "0.to_kv.weight"].T
        k, v = kv.chunk(2, dim=-1)
        b, n, inner = q.shape
        d = inner // heads
        sh = lambda t: t.reshape(b, t.shape[1], heads, d).transpose(1, 2)
        s = 1 / math.sqrt(math.sqrt(d))
        w = ((sh(q) * s) @ (sh(k) * s).transpose(-1, -2)).softmax(-1)
        o = (w @ sh(v)).transpose(1, 2).reshape(b, n, inner) @ sd[p + "0.to_out.weight"].T
        lat = o + lat
        h = ref_layernorm(lat, sd[p + "1.0.weight"], sd[p + "1.0.bias"]) @ sd[p + "1.1.weight"].T
        lat = F.gelu(h) @ sd[p + "1.3.weight"].T + lat
    out = lat @ sd["proj_out.weight"].T + sd["proj_out.bias"]
    return ref_layernorm(out, sd["norm_out.weight"], sd["norm_out.bias"])


def ref_tokens(nested, feats, heads=1):
    """[F, 554] -> [F*24, C] following the released order, with plain tensor ops."""
    pm = nested["proj_model"]
    parts = {"headpose": feats[:, 0:6], "eye": feats[:, 6:12], "emo": feats[:, 12:42], "mouth": feats[:, 42:554]}
    proj = [ref_layernorm(parts[p] @ pm[f"{p}_proj.weight"].T, pm["norm.weight"], pm["norm.bias"])
            for p in ("headpose", "eye", "emo", "mouth")]
    mouth = ref_resampler(nested["mouth_proj_model"], parts["mouth"][:, None], heads=heads)
    emo = ref_resampler(nested["emo_proj_model"], parts["emo"][:, None], heads=heads)
    per_frame = torch.cat([torch.stack(proj, 1), mouth, emo], dim=1)  # [F, 24, C]
    return per_frame.reshape(-1, per_frame.shape[-1])


@pytest.fixture
def adapter(tiny_adapter_state):
    return adapter_from_state_dict(flatten(tiny_adapter_state))


def test_tokens_match_reference_in_released_order(adapter, tiny_adapter_state):
    feats = torch.randn(2, 5, 554, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = adapter.encoder(feats)
    assert tokens.shape == (2, 5 * 24, 32)
    assert adapter.encoder.tokens_per_frame == 24
    for p in range(2):
        ref = ref_tokens(tiny_adapter_state, feats[p])
        torch.testing.assert_close(tokens[p], ref, rtol=1e-4, atol=1e-5)


def test_resamplers_use_the_released_head_count():
    """The released resamplers have 20 heads of 64: an adapter with that attention width is read as 20
    heads and matches the 20-head reference, which differs clearly from a 1-head reading."""
    from checkpoint_factory import adapter_state_dict

    state = adapter_state_dict(heads=20, dim_head=64, seed=4)
    adapter = adapter_from_state_dict(flatten(state))
    assert adapter.encoder.mouth_proj_model.layers[0][0].heads == 20
    feats = torch.randn(1, 3, 554, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens = adapter.encoder(feats)[0]
    torch.testing.assert_close(tokens, ref_tokens(state, feats[0], heads=20), rtol=1e-4, atol=1e-5)
    assert (tokens - ref_tokens(state, feats[0], heads=1)).abs().max() > 1e-2


def test_each_feature_group_moves_only_its_tokens(adapter):
    """Changing one frame's mouth feature changes that frame's mouth projection token (slot 3) and
    the 16 mouth-resampler tokens (slots 4-19) only; emotion changes slot 2 and slots 20-23."""
    feats = torch.randn(1, 3, 554, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = adapter.encoder(feats).reshape(3, 24, -1)
        mouth = feats.clone()
        mouth[0, 1, 42:] += 1.0
        moved = (adapter.encoder(mouth).reshape(3, 24, -1) - base).abs().amax(-1) > 1e-6
        emo = feats.clone()
        emo[0, 1, 12:42] += 1.0
        moved_emo = (adapter.encoder(emo).reshape(3, 24, -1) - base).abs().amax(-1) > 1e-6
    expected = torch.zeros(3, 24, dtype=torch.bool)
    expected[1, 3] = True
    expected[1, 4:20] = True
    assert torch.equal(moved, expected)
    expected_emo = torch.zeros(3, 24, dtype=torch.bool)
    expected_emo[1, 2] = True
    expected_emo[1, 20:24] = True
    assert torch.equal(moved_emo, expected_emo)


def test_group_scales_multiply_their_groups(adapter):
    feats = torch.randn(1, 1, 554, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = adapter.encoder(feats)
        scaled = adapter.encoder(feats, GroupScales(proj=0.5, mouth=2.0, emo=0.0))
    torch.testing.assert_close(scaled[0, 0:4], base[0, 0:4] * 0.5)
    torch.testing.assert_close(scaled[0, 4:20], base[0, 4:20] * 2.0)
    assert torch.count_nonzero(scaled[0, 20:24]) == 0
    assert adapter.encoder.tokens_per_frame == 24  # 4 projection + 16 mouth + 4 emotion tokens, in that order


@pytest.mark.parametrize("shape, message", [
    ((1, 5, 553), "width 553"),
    ((1, 0, 554), "0 frames"),
    ((2, 3, 4, 554), "must be [persons, frames, 554]"),
])
def test_bad_feature_shapes_are_explained(adapter, shape, message):
    with pytest.raises(FantasyPortraitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        adapter.encoder(torch.zeros(shape))


def test_non_finite_features_are_refused(adapter):
    feats = torch.zeros(1, 1, 554)
    feats[0, 0, 7] = float("nan")
    with pytest.raises(FantasyPortraitError, match="NaN"):
        adapter.encoder(feats)
