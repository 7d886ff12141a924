"""Per-latent-frame token windows, as the released pipeline builds them.

The Wan VAE packs frame 0 alone and then 4 video frames per latent frame, so a clip has
``F = 4k + 1`` frames and ``T_lat = k + 1`` latent frames. With ``n`` tokens per video frame
(24 for the released adapter) the released windowing gives every latent frame ``4n + 1``
tokens (97):

* latent frame 0: the ``n`` tokens of frame 0 followed by ``3n + 1`` zero tokens;
* latent frame ``i >= 1``: the flat tokens ``[4n*i - 3n - 1, 4n*i + n - 1]`` (inclusive), i.e.
  the last token of frame ``4i - 4`` followed by all tokens of frames ``4i - 3 .. 4i``. For
  ``n = 24`` that is ``[96i - 73, 96i + 23]``.

The zero padding is not masked out: the zeros take part in the softmax as keys with K = V = 0.
The released weights were trained with exactly this, so it is reproduced by default.
"""

from __future__ import annotations

import torch

from ..errors import FantasyPortraitError

VAE_TEMPORAL_STRIDE = 4


def is_valid_frame_count(num_frames: int) -> bool:
    return num_frames >= 1 and (num_frames - 1) % VAE_TEMPORAL_STRIDE == 0


def latent_frame_count(num_frames: int) -> int:
    """Number of Wan latent frames for a clip of ``num_frames`` (must be 4k+1)."""
    check_frame_count(num_frames)
    return (num_frames - 1) // VAE_TEMPORAL_STRIDE + 1


def nearest_valid_frame_counts(num_frames: int) -> tuple[int, int]:
    """The largest 4k+1 count <= ``num_frames`` and the smallest 4k+1 count >= it."""
    if num_frames < 1:
        return 1, 1
    lower = (num_frames - 1) // VAE_TEMPORAL_STRIDE * VAE_TEMPORAL_STRIDE + 1
    upper = lower if lower == num_frames else lower + VAE_TEMPORAL_STRIDE
    return lower, upper


def check_clip_length(length: int, what: str = "length") -> None:
    """A driving-clip length setting: 0 (the whole clip) or a Wan length, 4k+1."""
    if length < 0 or (length and not is_valid_frame_count(length)):
        lower, upper = nearest_valid_frame_counts(max(length, 1))
        raise FantasyPortraitError(f"{what} must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got "
                                   f"{length}: use {lower} or {upper}.")


def check_frame_count(num_frames: int) -> None:
    if num_frames < 1:
        raise FantasyPortraitError(
            f"The driving clip has {num_frames} frames; at least 1 frame is needed."
        )
    if not is_valid_frame_count(num_frames):
        lower, upper = nearest_valid_frame_counts(num_frames)
        raise FantasyPortraitError(
            f"Wan needs a frame count of the form 4k+1 (1, 5, 9, ..., 81, ...); got {num_frames}. "
            f"Trim the driving clip to {lower} frames or pad it to {upper} "
            f"(the released code trims to the largest 4k+1 count)."
        )


def window_length(tokens_per_frame: int) -> int:
    return VAE_TEMPORAL_STRIDE * tokens_per_frame + 1


def window_indices(num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Flat token index for every window slot, ``[T_lat, 4n+1]``; ``-1`` marks a zero slot."""
    t_lat = latent_frame_count(num_frames)
    n = tokens_per_frame
    length = window_length(n)
    idx = torch.full((t_lat, length), -1, dtype=torch.long)
    idx[0, :n] = torch.arange(n)
    for i in range(1, t_lat):
        start = VAE_TEMPORAL_STRIDE * n * i - (VAE_TEMPORAL_STRIDE - 1) * n - 1
        idx[i] = torch.arange(start, start + length)
    return idx


def build_windows(tokens: torch.Tensor, num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Turn ``[B, F*n, C]`` frame-major tokens into ``[B, T_lat, 4n+1, C]`` windows.

    Works on any per-token tensor. The windows hold the raw tokens; the patched model projects them
    to keys and values per block call (the projections are bias-free, so zero tokens stay zero).
    """
    if tokens.ndim != 3:
        raise FantasyPortraitError(
            f"Expression tokens must be [batch, frames*tokens, channels]; got shape {tuple(tokens.shape)}."
        )
    check_frame_count(num_frames)
    expected = num_frames * tokens_per_frame
    if tokens.shape[1] != expected:
        raise FantasyPortraitError(
            f"Expected {expected} tokens ({num_frames} frames x {tokens_per_frame}); got {tokens.shape[1]}."
        )
    idx = window_indices(num_frames, tokens_per_frame).to(tokens.device)
    padded = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])], dim=1)
    # index -1 selects the appended zero token
    return padded[:, idx.reshape(-1)].reshape(tokens.shape[0], idx.shape[0], idx.shape[1], tokens.shape[2])


FIT_MODES = ("error", "trim", "pad")


def fit_frame_count(features: torch.Tensor, mode: str = "error", target: int | None = None,
                    ) -> tuple[torch.Tensor, str | None]:
    """Bring ``[..., F, D]`` per-frame features to a 4k+1 frame count, or to exactly ``target`` frames.

    ``trim`` keeps the largest 4k+1 count <= F (the released behaviour); ``pad`` repeats the last
    frame up to the smallest 4k+1 count >= F; ``error`` refuses. With ``target`` (4k+1) a longer clip
    is trimmed to it and a shorter one padded (``pad``) or refused. Returns the features and a
    message saying what was done (None when nothing was needed).
    """
    if mode not in FIT_MODES:
        raise FantasyPortraitError(f"Unknown frame-count mode {mode!r}; choose one of {', '.join(FIT_MODES)}.")
    frames = features.shape[-2]
    if frames < 1:
        check_frame_count(frames)
    if target:
        check_clip_length(target, "num_frames")
        if frames > target:
            return features[..., :target, :], f"trimmed the driving features from {frames} to {target} frames"
        if frames < target and mode != "pad":
            raise FantasyPortraitError(f"The driving clip has {frames} frames but {target} were asked for; set "
                                       "frame_fit to pad or lower num_frames.")
        upper = target
    else:
        if is_valid_frame_count(frames):
            return features, None
        if mode == "error":
            check_frame_count(frames)
        lower, upper = nearest_valid_frame_counts(frames)
        if mode == "trim":
            return features[..., :lower, :], f"trimmed the driving features from {frames} to {lower} frames (4k+1)"
    if upper == frames:
        return features, None
    pad = features[..., -1:, :].expand(*features.shape[:-2], upper - frames, features.shape[-1])
    return torch.cat([features, pad], dim=-2), (
        f"padded the driving features from {frames} to {upper} frames by repeating the last frame")


def frame_count_of_latent(latent_frames: int) -> int:
    """Video frames of a Wan latent with ``latent_frames`` frames (the inverse of :func:`latent_frame_count`)."""
    return VAE_TEMPORAL_STRIDE * (latent_frames - 1) + 1


def check_latent_fit(embeds_latent_frames: int, latent_shape, grid: tuple[int, int] | None = None,
                     size: tuple[int, int] | None = None) -> None:
    """Refuse a latent the portrait embeds were not made for, naming the input to change.

    ``latent_shape`` is the sampled latent's ``[B, C, T, H, W]``; ``grid`` the token grid (rows, cols)
    a multi-portrait mask was built for (``size`` its width x height in pixels).
    """
    if len(latent_shape) != 5:
        raise FantasyPortraitError(
            f"The latent being sampled has shape {tuple(latent_shape)}, not a video latent [B, C, T, H, W]: connect "
            "WanImageToVideo's latent output.")
    t_lat, height, width = latent_shape[2], latent_shape[3], latent_shape[4]
    if t_lat != embeds_latent_frames:
        have, want = frame_count_of_latent(embeds_latent_frames), frame_count_of_latent(t_lat)
        raise FantasyPortraitError(
            f"The portrait embeds cover {have} frames ({embeds_latent_frames} latent frames) but the latent being "
            f"sampled has {t_lat} latent frames ({want} frames). Set WanImageToVideo's length to {have}, or "
            f"num_frames in FantasyPortrait Encode to {want}.")
    if grid is not None:
        actual = (-(-height // 2), -(-width // 2))  # Wan pads the latent to whole 2x2 patches
        if tuple(grid) != actual:
            made = f"{size[0]}x{size[1]}" if size else f"a {grid[1]}x{grid[0]}-token grid"
            raise FantasyPortraitError(
                f"The multi-portrait regions were made for {made} (width x height) but the latent being sampled is "
                f"{width * 8}x{height * 8}: use the same width and height in FantasyPortrait Multi-Portrait Combine "
                "and WanImageToVideo.")
