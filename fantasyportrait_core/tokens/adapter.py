"""The expression-token front end of the FantasyPortrait adapter.

Per video frame the released adapter turns the 554-wide PD-FGC feature into 24 tokens of 2048:

* ``proj_model``: four bias-free linear projections (head pose, eyes, emotion, mouth) sharing
  one LayerNorm -> 4 tokens, in the order [headpose, eye, emo, mouth];
* ``mouth_proj_model``: a Perceiver resampler with 16 learned queries on the 512-d mouth
  feature (a one-token sequence) -> 16 tokens;
* ``emo_proj_model``: the same with 4 queries on the 30-d emotion feature -> 4 tokens.

Tokens are frame-major: ``[B, F*24, C]`` with frame f's tokens at ``24f .. 24f+23``.
All dimensions are read from the checkpoint's tensor shapes (see :mod:`.checkpoint`), so a
small checkpoint in the released key layout builds a small model.

Layers with weights come from ``operations`` (``torch.nn`` by default; inside ComfyUI its ``comfy.ops``, as
ComfyUI's own models take them, so weights are made without a random init and handled by ComfyUI).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FantasyPortraitError
from ..motion.features import split_features

PROJ_PARTS = ("headpose", "eye", "emo", "mouth")


class MultiProjection(nn.Module):
    """Four bias-free linear projections and one shared LayerNorm (``proj_model``)."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, operations=nn):
        super().__init__()
        self.in_dims = dict(in_dims)
        for part in PROJ_PARTS:
            setattr(self, f"{part}_proj", operations.Linear(in_dims[part], out_dim, bias=False))
        self.norm = operations.LayerNorm(out_dim)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{part: [B, F, d_part]}`` -> ``[B, F, 4, out_dim]``."""
        return torch.stack([self.norm(getattr(self, f"{p}_proj")(parts[p])) for p in PROJ_PARTS], dim=2)


class PerceiverAttention(nn.Module):
    """Latents attend to ``concat(inputs, latents)``; separate LayerNorms for each."""

    def __init__(self, dim: int, heads: int, dim_head: int, operations=nn):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm1 = operations.LayerNorm(dim)
        self.norm2 = operations.LayerNorm(dim)
        self.to_q = operations.Linear(dim, inner, bias=False)
        self.to_kv = operations.Linear(dim, 2 * inner, bias=False)
        self.to_out = operations.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n_lat, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)

        def heads(t):
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return self.to_out(out.transpose(1, 2).reshape(b, n_lat, -1))


class FeedForward(nn.Sequential):
    """LayerNorm, Linear (x mult, no bias), GELU, Linear (no bias); indices match the weights."""

    def __init__(self, dim: int, hidden: int, operations=nn):
        super().__init__(
            operations.LayerNorm(dim),
            operations.Linear(dim, hidden, bias=False),
            nn.GELU(),
            operations.Linear(hidden, dim, bias=False),
        )


class Resampler(nn.Module):
    """Perceiver resampler: learned queries refined by ``depth`` attention/feed-forward layers."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, num_queries: int,
                 in_dim: int, out_dim: int, ff_hidden: int, operations=nn):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = operations.Linear(in_dim, dim)
        self.proj_out = operations.Linear(dim, out_dim)
        self.norm_out = operations.LayerNorm(out_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head, operations), FeedForward(dim, ff_hidden, operations)])
            for _ in range(depth)
        )

    @property
    def num_queries(self) -> int:
        return self.latents.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, S, in_dim]`` -> ``[N, num_queries, out_dim]``."""
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


@dataclass(frozen=True)
class GroupScales:
    """Multipliers for the three token groups (1.0 = as trained)."""

    proj: float = 1.0
    mouth: float = 1.0
    emo: float = 1.0


class ExpressionEncoder(nn.Module):
    """``[B, F, 554]`` expression features -> ``[B, F*24, C]`` expression tokens."""

    def __init__(self, proj_model: MultiProjection, mouth_proj_model: Resampler, emo_proj_model: Resampler):
        super().__init__()
        self.proj_model = proj_model
        self.mouth_proj_model = mouth_proj_model
        self.emo_proj_model = emo_proj_model
        out_dims = {proj_model.norm.normalized_shape[0], mouth_proj_model.proj_out.out_features,
                    emo_proj_model.proj_out.out_features}
        if len(out_dims) != 1:
            raise FantasyPortraitError(f"Adapter parts disagree on the token width: {sorted(out_dims)}.")
        if mouth_proj_model.proj_in.in_features != proj_model.in_dims["mouth"] or \
                emo_proj_model.proj_in.in_features != proj_model.in_dims["emo"]:
            raise FantasyPortraitError("Adapter resamplers do not take the same feature widths as proj_model.")

    @property
    def feature_dims(self) -> dict[str, int]:
        return dict(self.proj_model.in_dims)

    @property
    def feature_dim(self) -> int:
        return sum(self.proj_model.in_dims.values())

    @property
    def token_dim(self) -> int:
        return self.proj_model.norm.normalized_shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return len(PROJ_PARTS) + self.mouth_proj_model.num_queries + self.emo_proj_model.num_queries

    def forward(self, features: torch.Tensor, scales: GroupScales = GroupScales()) -> torch.Tensor:
        features = self.check_features(features)
        param = self.proj_model.norm.weight
        features = features.to(device=param.device, dtype=param.dtype)
        b, f, _ = features.shape
        parts = split_features(features, self.feature_dims)
        proj = self.proj_model(parts)  # [B, F, 4, C]
        mouth = self.mouth_proj_model(parts["mouth"].reshape(b * f, 1, -1)).reshape(b, f, -1, self.token_dim)
        emo = self.emo_proj_model(parts["emo"].reshape(b * f, 1, -1)).reshape(b, f, -1, self.token_dim)
        groups = {"proj": proj, "mouth": mouth, "emo": emo}
        tokens = torch.cat([groups[g] * getattr(scales, g) if getattr(scales, g) != 1.0 else groups[g]
                            for g in ("proj", "mouth", "emo")], dim=2)
        return tokens.reshape(b, f * self.tokens_per_frame, self.token_dim)

    def check_features(self, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            features = torch.as_tensor(features)
        if features.ndim == 2:
            features = features.unsqueeze(0)
        if features.ndim != 3:
            raise FantasyPortraitError(
                f"Expression features must be [persons, frames, {self.feature_dim}]; got shape {tuple(features.shape)}."
            )
        if features.shape[-1] != self.feature_dim:
            raise FantasyPortraitError(
                f"Expression features have width {features.shape[-1]}, but this adapter expects "
                f"{self.feature_dim} (headpose, eye, emo, mouth = {self.feature_dims}). "
                "Use features from the PD-FGC motion encoder that belongs to this adapter."
            )
        if features.shape[1] == 0:
            raise FantasyPortraitError("Expression features have 0 frames; the driving clip gave no usable frames.")
        if not torch.isfinite(features).all():
            raise FantasyPortraitError("Expression features contain NaN or infinite values.")
        return features
