"""Colour and brightness kept on the portrait's over a long video.

Sampling chunk after chunk, each starting from the last frames of the one before, lets small shifts of colour,
brightness and contrast add up (the "colour drift" of chained Wan clips). Method (``match_colour``): for every
output frame, the mean and standard deviation of each RGB channel (on a downscaled copy), smoothed over time
with a Gaussian, are mapped onto the portrait's (as Wan sees it: resized and centre-cropped to the output size)
by one gain and offset per channel: ``out = (frame - mean_t) * (std_ref / std_t) + mean_ref``. Smoothing keeps
the correction from flickering; the gain is limited to [1/1.5, 1.5]. The same transform on the frames that the
next chunk starts from means that chunk starts where the output is, so the joins stay invisible. A portrait
animation keeps its lighting, so its frames' statistics stay close to the portrait's; what drifts away is
pulled back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_GAIN = 1.5
STATS_SIDE = 64  # frames are downscaled to about this side for the statistics
SMOOTH_SIGMA = 4.0  # frames


@dataclass(frozen=True)
class ColourStats:
    mean: torch.Tensor  # [3]
    std: torch.Tensor  # [3]


def _small(frames: torch.Tensor) -> torch.Tensor:
    """``[F, H, W, 3]`` -> a downscaled ``[F, 3, h, w]`` float copy for the statistics."""
    x = frames.movedim(-1, 1).float()
    step = max(1, max(x.shape[-2:]) // STATS_SIDE)
    return torch.nn.functional.avg_pool2d(x, step) if step > 1 else x


def frame_stats(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame channel means and standard deviations of ``[F, H, W, 3]`` frames: two ``[F, 3]`` tensors."""
    x = _small(frames)
    return x.mean(dim=(2, 3)), x.std(dim=(2, 3)).clamp_min(1e-4)


def reference_stats(image: torch.Tensor) -> ColourStats:
    """The statistics the output is kept on, from the portrait ``[1, H, W, 3]`` (at the output size)."""
    mean, std = frame_stats(image[:1])
    return ColourStats(mean[0], std[0])


def _smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``[F, C]`` along F (edges repeated)."""
    if sigma <= 0 or values.shape[0] < 2:
        return values
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(values.dtype)
    x = values.T[:, None]  # [C, 1, F]
    x = torch.nn.functional.pad(x, (radius, radius), mode="replicate")
    return torch.nn.functional.conv1d(x, kernel.view(1, 1, -1)).squeeze(1).T


def match_colour(frames: torch.Tensor, reference: ColourStats, sigma: float = SMOOTH_SIGMA) -> torch.Tensor:
    """``[F, H, W, 3]`` float frames (0..1) with each frame's smoothed channel statistics mapped onto
    ``reference``'s (a new tensor, clipped to 0..1)."""
    mean, std = frame_stats(frames)
    mean, std = _smooth(mean, sigma), _smooth(std, sigma)
    gain = (reference.std.to(std) / std).clamp(1 / MAX_GAIN, MAX_GAIN)  # [F, 3]
    offset = reference.mean.to(mean) - mean * gain
    out = frames.float() * gain[:, None, None, :] + offset[:, None, None, :]
    return out.clamp(0.0, 1.0).to(frames.dtype)


def as_uint8(frames: torch.Tensor) -> np.ndarray:
    """IMAGE frames (float 0..1) -> uint8 ``[F, H, W, 3]`` as video files store them."""
    return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
