"""Frames as the face models take them: RGB uint8 ``[H, W, 3]`` (ComfyUI IMAGE converted by
:func:`to_uint8`). The released models were trained on BGR (OpenCV) frames: the detector and the
landmark model warp the RGB frame and flip only their small input to BGR; :func:`to_bgr` converts a
whole frame (for insightface)."""

from __future__ import annotations

import numpy as np

from ..errors import FantasyPortraitError


def to_uint8(image) -> np.ndarray:
    """ComfyUI IMAGE (float 0..1, RGB) -> uint8 RGB; uint8 input passes through."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.round(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_bgr(frame_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame_rgb[..., ::-1])


def check_frame(frame: np.ndarray, what: str = "frame") -> None:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FantasyPortraitError(f"The {what} must be an RGB image [H, W, 3]; got shape {frame.shape}.")
    if frame.shape[0] < 16 or frame.shape[1] < 16:
        raise FantasyPortraitError(
            f"The {what} is {frame.shape[1]}x{frame.shape[0]} pixels, too small to find a face in "
            "(faces need to be at least about 96 pixels tall).")
