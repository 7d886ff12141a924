"""Features -> expression tokens -> per-latent-frame windows, for one or several persons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .adapter import ExpressionEncoder, GroupScales
from .windows import build_windows, check_frame_count


@dataclass
class ExpressionTokens:
    """Expression tokens and windows of P persons (each person is one batch row)."""

    tokens: torch.Tensor   # [P, F*n, C]
    windows: torch.Tensor  # [P, T_lat, 4n+1, C]
    num_frames: int
    tokens_per_frame: int


@torch.inference_mode()
def encode_features(encoder: ExpressionEncoder, features: torch.Tensor, scales: GroupScales = GroupScales(),
                    frames_per_chunk: int = 64,
                    progress: Callable[[int, int], None] | None = None) -> ExpressionTokens:
    """Encode ``[P, F, 554]`` features (F must be 4k+1) into tokens and windows.

    Frames are encoded in chunks of ``frames_per_chunk`` (each frame is independent), calling
    ``progress(done, total)`` after each chunk.
    """
    features = encoder.check_features(features)
    persons, frames, _ = features.shape
    check_frame_count(frames)
    chunks = []
    for start in range(0, frames, frames_per_chunk):
        chunks.append(encoder(features[:, start:start + frames_per_chunk], scales).float())
        if progress is not None:
            progress(min(start + frames_per_chunk, frames), frames)
    tokens = torch.cat(chunks, dim=1)
    n = encoder.tokens_per_frame
    return ExpressionTokens(tokens=tokens, windows=build_windows(tokens, frames, n), num_frames=frames,
                          tokens_per_frame=n)
