"""The adapter's cross-attention on expression-token windows, as a pure function.

Inside every Wan block the released model adds a third cross-attention beside the text and
CLIP-image ones. It reuses the block's own cross-attention query ``q`` (after ``norm_q``) and
attends, per latent frame, to that frame's token window only::

    x_ad[t] = softmax(q[t] K_t^T / sqrt(head_dim)) V_t,   K_t = W_k window_t, V_t = W_v window_t

with no norm on ``K_t``. The block then computes ``W_o(x_txt + x_img + scale * x_ad)``; because
``W_o`` is linear, adding ``scale * W_o(x_ad)`` (without ``W_o``'s bias) beside the block's
cross-attention output is exactly the same. This module returns ``scale * x_ad``, i.e. the
branch output *before* the output projection.

``K_t`` and ``V_t`` depend only on the windows and the block. The patched model projects them with
:func:`project_window_kv` inside each block call (about 0.2% of a 480p x 81-frame step's FLOPs) instead of
keeping 40 blocks' K/V for the whole run, so between block calls only the windows stay on the device.

Masks (multi-person): ``mask[t, l, w]`` is True where query token ``l`` of latent frame ``t``
may attend to window slot ``w``. A query whose mask row is all False attends to nothing: its
output is defined as exactly zero (the branch adds nothing there), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FantasyPortraitError


def project_window_kv(windows: torch.Tensor, k_weight: torch.Tensor, v_weight: torch.Tensor):
    """Keys and values of token windows: ``[B, T, W, C]`` -> two ``[B, T, W, D]`` tensors.

    The projections are bias-free, so zero (padding) tokens give zero keys and values.
    """
    if windows.ndim != 4:
        raise FantasyPortraitError(
            f"Token windows must be [batch, latent_frames, window, channels]; got {tuple(windows.shape)}."
        )
    if k_weight.shape[1] != windows.shape[-1] or v_weight.shape[1] != windows.shape[-1]:
        raise FantasyPortraitError(
            f"Adapter K/V weights expect {k_weight.shape[1]}-wide tokens; windows have {windows.shape[-1]} "
            "channels. Were the windows made with the same adapter checkpoint?"
        )
    windows = windows.to(dtype=k_weight.dtype, device=k_weight.device)
    return F.linear(windows, k_weight), F.linear(windows, v_weight)


def adapter_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    scale: float | torch.Tensor = 1.0,
    mask: torch.Tensor | None = None,
    query_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block-diagonal (per latent frame) attention of video queries on token windows.

    Args:
        q: the block's cross-attention query, ``[B, T_lat*L, heads*head_dim]`` (frame-major,
           as Wan flattens its patch grid).
        k, v: window keys and values from :func:`project_window_kv`, ``[B or 1, T_lat, W, heads*head_dim]``.
        num_heads: attention heads of the Wan block (40 for 14B).
        scale: the portrait strength; a number or a ``[B]`` tensor (one per batch entry).
        mask: optional boolean ``[T_lat, L, W]`` or ``[B, T_lat, L, W]``; True = may attend.
        query_scale: optional per-token multiplier ``[L]`` (same in every latent frame), e.g. each
           person's strength inside their face region.

    Returns:
        ``scale * x_ad`` as ``[B, T_lat*L, heads*head_dim]`` in ``q``'s dtype.
    """
    batch, tokens, dim = q.shape
    if k.ndim != 4 or k.shape != v.shape:
        raise FantasyPortraitError(
            f"Adapter keys/values must both be [batch, latent_frames, window, dim]; got {tuple(k.shape)} and {tuple(v.shape)}."
        )
    t_lat, win = k.shape[1], k.shape[2]
    if k.shape[-1] != dim:
        raise FantasyPortraitError(
            f"Adapter keys have width {k.shape[-1]} but the model's attention width is {dim}: "
            "the adapter checkpoint does not fit this Wan model (FantasyPortrait is for Wan 2.1 I2V 14B)."
        )
    if tokens % t_lat:
        raise FantasyPortraitError(
            f"The video has {tokens} tokens, which does not split into {t_lat} latent frames. "
            "The portrait embeds were made for a different frame count than the latent being sampled."
        )
    if dim % num_heads:
        raise FantasyPortraitError(f"Attention width {dim} is not divisible by {num_heads} heads.")
    if k.shape[0] not in (1, batch):
        raise FantasyPortraitError(f"Adapter keys have batch {k.shape[0]}, queries have batch {batch}.")
    per_frame = tokens // t_lat
    head_dim = dim // num_heads

    qh = q.reshape(batch, t_lat, per_frame, num_heads, head_dim).permute(0, 1, 3, 2, 4)
    kh = k.to(q.dtype).expand(batch, -1, -1, -1).reshape(batch, t_lat, win, num_heads, head_dim).permute(0, 1, 3, 2, 4)
    vh = v.to(q.dtype).expand(batch, -1, -1, -1).reshape(batch, t_lat, win, num_heads, head_dim).permute(0, 1, 3, 2, 4)
    qh = qh.reshape(batch * t_lat, num_heads, per_frame, head_dim)
    kh = kh.reshape(batch * t_lat, num_heads, win, head_dim)
    vh = vh.reshape(batch * t_lat, num_heads, win, head_dim)

    attn_mask = None
    empty_rows = None
    if mask is not None:
        mask = mask.to(device=q.device, dtype=torch.bool)
        if mask.ndim == 3:
            mask = mask.unsqueeze(0)
        if mask.shape[1:] != (t_lat, per_frame, win) or mask.shape[0] not in (1, batch):
            raise FantasyPortraitError(
                f"Portrait mask has shape {tuple(mask.shape)}, expected [{t_lat}, {per_frame}, {win}] "
                "(latent frames, tokens per latent frame, window tokens). Was it built for this output size and frame count?"
            )
        mask = mask.expand(batch, -1, -1, -1)
        empty_rows = ~mask.any(dim=-1)  # [B, T, L]
        if bool(empty_rows.any()):
            # let empty rows attend everywhere (finite result), then zero them below
            mask = mask | empty_rows.unsqueeze(-1)
        else:
            empty_rows = None
        attn_mask = mask.reshape(batch * t_lat, 1, per_frame, win)

    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)
    out = out.reshape(batch, t_lat, num_heads, per_frame, head_dim).permute(0, 1, 3, 2, 4)
    out = out.reshape(batch, t_lat, per_frame, dim)
    if empty_rows is not None:
        out = out.masked_fill(empty_rows.unsqueeze(-1), 0.0)
    if query_scale is not None:
        if query_scale.numel() != per_frame:
            raise FantasyPortraitError(
                f"Per-token portrait strengths cover {query_scale.numel()} tokens, but a latent frame has {per_frame}.")
        out = out * query_scale.to(device=out.device, dtype=out.dtype).reshape(1, 1, per_frame, 1)
    out = out.reshape(batch, tokens, dim)

    if isinstance(scale, torch.Tensor):
        scale = scale.to(device=out.device, dtype=out.dtype).reshape(-1, 1, 1)
    return out * scale


class AdapterProjections(torch.nn.Module):
    """The per-block K/V projections as one module (``blocks.{i}.k`` / ``.v``), so a host can load,
    offload and cast them like any model."""

    def __init__(self, weights: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        count = max(weights) + 1
        blocks = []
        for i in range(count):
            k, v = weights[i]
            block = torch.nn.Module()
            block.k = torch.nn.Parameter(k, requires_grad=False)
            block.v = torch.nn.Parameter(v, requires_grad=False)
            blocks.append(block)
        self.blocks = torch.nn.ModuleList(blocks)
