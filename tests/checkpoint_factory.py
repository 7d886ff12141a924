"""Builds adapter checkpoints in the exact key layout of the released files.

The key names and shapes are written out here independently of the pack's modules, so loading
these files checks the loader against the released layout rather than against itself.
Released shapes: token width 2048, resampler width 1280, depth 4, 20 heads x 64, ff x4,
16 mouth / 4 emotion queries, 40 Wan blocks of width 5120.
"""

from __future__ import annotations

import torch

FEATURE_DIMS = {"headpose": 6, "eye": 6, "emo": 30, "mouth": 512}

RELEASED = dict(token_dim=2048, res_dim=1280, depth=4, heads=20, dim_head=64, mouth_queries=16,
                emo_queries=4, ff_mult=4, blocks=40, model_dim=5120)


def _resampler_keys(res_dim, depth, inner, num_queries, in_dim, out_dim, ff_mult):
    shapes = {
        "latents": (1, num_queries, res_dim),
        "proj_in.weight": (res_dim, in_dim),
        "proj_in.bias": (res_dim,),
        "proj_out.weight": (out_dim, res_dim),
        "proj_out.bias": (out_dim,),
        "norm_out.weight": (out_dim,),
        "norm_out.bias": (out_dim,),
    }
    for i in range(depth):
        shapes.update({
            f"layers.{i}.0.norm1.weight": (res_dim,),
            f"layers.{i}.0.norm1.bias": (res_dim,),
            f"layers.{i}.0.norm2.weight": (res_dim,),
            f"layers.{i}.0.norm2.bias": (res_dim,),
            f"layers.{i}.0.to_q.weight": (inner, res_dim),
            f"layers.{i}.0.to_kv.weight": (2 * inner, res_dim),
            f"layers.{i}.0.to_out.weight": (res_dim, inner),
            f"layers.{i}.1.0.weight": (res_dim,),
            f"layers.{i}.1.0.bias": (res_dim,),
            f"layers.{i}.1.1.weight": (res_dim * ff_mult, res_dim),
            f"layers.{i}.1.3.weight": (res_dim, res_dim * ff_mult),
        })
    return shapes


def adapter_shapes(token_dim=32, res_dim=64, depth=2, heads=1, dim_head=64, mouth_queries=16,
                   emo_queries=4, ff_mult=2, blocks=2, model_dim=128, feature_dims=None):
    """``{part: {key: shape}}`` of an adapter in the released layout (small by default)."""
    fd = dict(FEATURE_DIMS, **(feature_dims or {}))
    inner = heads * dim_head
    proj = {f"{p}_proj.weight": (token_dim, fd[p]) for p in ("headpose", "eye", "emo", "mouth")}
    proj.update({"norm.weight": (token_dim,), "norm.bias": (token_dim,)})
    ip = {}
    for i in range(blocks):
        for kv in "kv":
            ip[f"blocks.{i}.cross_attn.ip_adapter_single_stream_{kv}_proj.weight"] = (model_dim, token_dim)
    return {
        "proj_model": proj,
        "mouth_proj_model": _resampler_keys(res_dim, depth, inner, mouth_queries, fd["mouth"], token_dim, ff_mult),
        "emo_proj_model": _resampler_keys(res_dim, depth, inner, emo_queries, fd["emo"], token_dim, ff_mult),
        "ip_adapter": ip,
    }


def adapter_state_dict(seed=0, device="cpu", dtype=torch.float32, **dims):
    """Random weights in the released nested layout ``{part: {key: tensor}}``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for part, shapes in adapter_shapes(**dims).items():
        out[part] = {}
        for key, shape in shapes.items():
            if device == "meta":
                out[part][key] = torch.empty(shape, device="meta", dtype=dtype)
                continue
            if key.endswith("bias"):
                t = 0.1 * torch.randn(shape, generator=gen)
            elif "norm" in key or key.endswith(".1.0.weight"):
                t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            elif key == "latents":
                t = torch.randn(shape, generator=gen)
            else:
                t = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
            out[part][key] = t.to(dtype)
    return out


def flatten(nested):
    return {f"{part}.{key}": t for part, sub in nested.items() for key, t in sub.items()}


def save_ckpt(path, nested):
    """The released ``fantasyportrait_model.ckpt`` layout: a pickled dict of four state dicts."""
    torch.save(nested, path)
    return path


def save_single_file(path, nested, motion_state=None, dtype=torch.float16):
    """The single-file safetensors layout: flat prefixed keys, optionally with ``pd_fpg.``."""
    from safetensors.torch import save_file

    flat = {k: v.to(dtype).contiguous() for k, v in flatten(nested).items()}
    for key, value in (motion_state or {}).items():
        flat["pd_fpg." + key] = value.to(dtype).contiguous()
    save_file(flat, path)
    return path
