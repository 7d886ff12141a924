"""Features -> expression tokens -> per-latent-frame windows, for one or several persons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import FantasyPortraitError
from .adapter import ExpressionEncoder, GroupScales
from .windows import build_windows, check_frame_count


@dataclass
class ExpressionTokens:
    """Expression tokens and windows of P persons (each person is one batch row)."""

    tokens: torch.Tensor   # [P, F*n, C]
    windows: torch.Tensor  # [P, T_lat, 4n+1, C]
    num_frames: int
    tokens_per_frame: int

    def frames(self, start: int, count: int) -> "ExpressionTokens":
        """The tokens and windows of frames ``[start, start + count)`` (``count`` 4k+1) exactly as a clip of just
        those frames gets them (its first frame opens the first window), for one chunk of a long video. Windows
        of several persons side by side (``[1, T, P*W, C]`` from Multi-Portrait Combine) stay side by side."""
        if start < 0 or start + count > self.num_frames:
            raise FantasyPortraitError(f"Frames {start}..{start + count - 1} were asked for but the driving motion "
                                       f"has {self.num_frames} frames.")
        n = self.tokens_per_frame
        tokens = self.tokens[:, start * n:(start + count) * n]
        windows = build_windows(tokens, count, n)  # [P, T, W, C], one row per person
        if self.windows.shape[0] != tokens.shape[0]:  # persons side by side along the token axis
            windows = torch.cat(windows.unbind(0), dim=1).unsqueeze(0)
        return ExpressionTokens(tokens, windows, count, n)


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
