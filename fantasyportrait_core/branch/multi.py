"""Several portraits in one image, each driven by its own driver, without expression leakage.

Released rule (``infer_multi.py``), re-implemented with the intended semantics:

* faces of the reference image are detected with the same detector and numbered left to right;
* face i's region is its box enlarged on each side by its driver's largest box motion over the clip
  relative to the driver's first-frame box (capped at 0.25 of the face size), truncated to pixels;
* the pixel label map (i+1 inside region i, later faces win where regions overlap, 0 = background) is
  max-pooled to Wan's latent tokens (16x16 pixels per token: VAE /8, patch 2x2; frame 0 alone, then
  4 frames per latent frame - the regions are static, so every latent frame has the same labels);
* persons' windows are concatenated along the token axis, in face order, and the mask lets a token
  of face i attend only to person i's window; background tokens attend to every person (released)
  or to none.

The released code builds the mask as ``~(token_label == window_label)`` and concatenates the drivers
in reverse order. For two persons the two inversions cancel (same result as here); for three or more
each face attends to the *other* drivers. This module builds the intended mask directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FantasyPortraitError
from ..sizing import MULTIPLE as TOKEN_STRIDE  # pixels per Wan token side: VAE 8 x patch 2
from ..tokens.encoding import ExpressionTokens
from ..tokens.windows import latent_frame_count
from ..video import shortest

MOTION_CAP = 0.25


def motion_margins(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """Largest move of a driver's face box (x0, y0, x1, y1 per frame) beyond its first-frame box,
    per side, relative to the first-frame size, each capped at 0.25: (left, right, up, down)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x0, y0, x1, y1 = boxes[0]
    w, h = x1 - x0, y1 - y0
    lo, hi = boxes.min(0), boxes.max(0)
    return (min((x0 - lo[0]) / w, MOTION_CAP), min((hi[2] - x1) / w, MOTION_CAP),
            min((y0 - lo[1]) / h, MOTION_CAP), min((hi[3] - y1) / h, MOTION_CAP))


def expand_region(box, margins, width: int, height: int) -> list[int]:
    """Face box enlarged by the motion margins, in whole pixels inside the image (released rounding)."""
    x0, y0, x1, y1 = [float(v) for v in box]
    fw, fh = int(x1 - x0), int(y1 - y0)
    left, right, up, down = margins
    return [max(0, int(x0 - fw * left)), max(0, int(y0 - fh * up)),
            min(width, int(x1 + fw * right)), min(height, int(y1 + fh * down))]


def map_boxes_to_output(boxes: np.ndarray, src_wh, dst_wh) -> np.ndarray:
    """Boxes in the reference image -> the output video, as WanImageToVideo resizes the start image
    (ComfyUI's ``common_upscale`` with a centre crop to the output aspect ratio)."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    old, new = sw / sh, dw / dh
    x = round((sw - sw * (new / old)) / 2) if old > new else 0
    y = round((sh - sh * (old / new)) / 2) if old < new else 0
    cw, ch = sw - 2 * x, sh - 2 * y
    boxes = np.asarray(boxes, dtype=np.float64).copy()
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - x) * dw / cw
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - y) * dh / ch
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, dw)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, dh)
    return boxes


def label_map(regions, width: int, height: int) -> np.ndarray:
    """``[H, W]`` int map: i+1 inside region i (later regions overwrite earlier ones), 0 elsewhere."""
    out = np.zeros((height, width), np.int64)
    for i, (x0, y0, x1, y1) in enumerate(regions):
        out[y0:y1, x0:x1] = i + 1
    return out


def token_grid(width: int, height: int) -> tuple[int, int]:
    """Tokens per latent frame (rows, cols) of native Wan for an output size: the latent is
    ``size // 8``, padded to even, then 2x2 patches."""
    return math.ceil((height // 8) / 2), math.ceil((width // 8) / 2)


def token_labels(labels: np.ndarray) -> torch.Tensor:
    """Pixel labels ``[H, W]`` -> per-token labels ``[rows * cols]`` by 16x16 max-pooling (released
    rule). Pixels beyond the last whole latent pixel are dropped and the grid is padded with
    background to whole tokens, matching how the model pads an odd latent."""
    height, width = labels.shape
    rows, cols = token_grid(width, height)
    crop = labels[: (height // 8) * 8, : (width // 8) * 8]
    padded = np.zeros((rows * TOKEN_STRIDE, cols * TOKEN_STRIDE), labels.dtype)
    padded[: crop.shape[0], : crop.shape[1]] = crop
    pooled = padded.reshape(rows, TOKEN_STRIDE, cols, TOKEN_STRIDE).max(axis=(1, 3))
    return torch.from_numpy(pooled.reshape(-1))


def build_mask(tokens: torch.Tensor, persons: int, window: int, latent_frames: int,
               background: str = "all") -> torch.Tensor:
    """``[T_lat, L, persons * window]`` bool: token with label i+1 may attend to person i's window only;
    label 0 (background) to every window (``"all"``, released) or to none (``"none"``: no portrait there)."""
    if background not in ("all", "none"):
        raise FantasyPortraitError(f"background must be 'all' or 'none', not {background!r}.")
    owner = torch.arange(persons).repeat_interleave(window)            # [N*W]
    mask = tokens[:, None] == (owner[None, :] + 1)                    # [L, N*W]
    if background == "all":
        mask |= (tokens == 0)[:, None]
    return mask.unsqueeze(0).expand(latent_frames, -1, -1)


def query_scales(tokens: torch.Tensor, strengths) -> torch.Tensor:
    """Per-token multiplier of the portrait branch: person i's strength inside face i's region, 1 in
    the background."""
    table = torch.tensor([1.0] + [float(s) for s in strengths])
    return table[tokens]


def parse_mapping(text: str, count: int) -> list[int]:
    """``"2,1"`` -> ``[1, 0]``: face i (left to right) is driven by driver mapping[i] (1-based in the
    text). Empty text means driver k drives face k."""
    text = (text or "").strip()
    if not text:
        return list(range(count))
    try:
        order = [int(p) - 1 for p in text.replace(" ", "").split(",")]
    except ValueError:
        raise FantasyPortraitError(f"Driver mapping {text!r} must be numbers separated by commas, e.g. '2,1'.") from None
    if len(order) != count:
        raise FantasyPortraitError(
            f"Driver mapping {text!r} names {len(order)} drivers but the portrait has {count} faces: give one "
            "driver number per face, left to right.")
    if sorted(order) != list(range(count)):
        raise FantasyPortraitError(
            f"Driver mapping {text!r} must use each driver 1..{count} exactly once.")
    return order


def parse_strengths(text: str, count: int) -> list[float]:
    text = (text or "").strip()
    if not text:
        return [1.0] * count
    try:
        values = [float(p) for p in text.replace(" ", "").split(",")]
    except ValueError:
        raise FantasyPortraitError(f"Per-person strengths {text!r} must be numbers separated by commas.") from None
    if not all(math.isfinite(v) for v in values):
        raise FantasyPortraitError(f"Per-person strengths {text!r} must be finite numbers (no nan or inf).")
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise FantasyPortraitError(f"{len(values)} strengths given for {count} persons.")
    return values


def common_length(drivers: list[ExpressionTokens]) -> tuple[list[ExpressionTokens], str | None]:
    """Cut every driver to the shortest clip: a latent-frame prefix of the windows (and the tokens of its
    frames) is exactly what the shorter clip gives."""
    frames, note = shortest([d.num_frames for d in drivers], "the drivers")
    if note is None:
        return drivers, None
    t_lat = latent_frame_count(frames)
    return [ExpressionTokens(d.tokens[:, :frames * d.tokens_per_frame], d.windows[:, :t_lat], frames,
                             d.tokens_per_frame) for d in drivers], note


@dataclass
class Combined:
    """Several persons for the patched model, everything in face order (faces left to right)."""

    expression: ExpressionTokens  # tokens [N, F*n, C] (one row per face), windows [1, T, N*W, C] side by side
    mask: torch.Tensor  # [T, L, N*W] (one frame's, expanded), True = may attend
    query_scale: torch.Tensor  # [L] per-token strength (each person's inside their region)
    regions: list  # per face, its region in output pixels
    labels: torch.Tensor  # [L] per-token person label (0 = background)
    notes: list[str] = field(default_factory=list)


def combine(drivers: list[ExpressionTokens], driver_boxes: list[np.ndarray], face_boxes: np.ndarray,
            width: int, height: int, mapping: list[int] | None = None, background: str = "all",
            strengths=None) -> Combined:
    """Everything the patched model needs for several persons. ``drivers[k]`` / ``driver_boxes[k]``: driver k's
    tokens and windows and face boxes ``[F, 4]``; ``face_boxes``: the portrait's faces in output pixels, left to
    right; face ``i`` is driven by driver ``mapping[i]`` (default: driver i); ``strengths`` per face."""
    n = len(face_boxes)
    if n < 1:
        raise FantasyPortraitError("No face was found in the portrait image.")
    if len(drivers) != n:
        raise FantasyPortraitError(
            f"The portrait has {n} face(s) but {len(drivers)} driver(s) were given: give one driver per face "
            "(persons from one video, or one video per person; in ComfyUI one FantasyPortrait Encode per face).")
    mapping = list(range(n)) if mapping is None else mapping
    drivers, note = common_length(drivers)
    faces = [drivers[mapping[i]] for i in range(n)]  # the one place where face order is decided
    regions = [expand_region(face_boxes[i], motion_margins(driver_boxes[mapping[i]]), width, height)
               for i in range(n)]
    labels = token_labels(label_map(regions, width, height))
    first = faces[0]
    t_lat, win = first.windows.shape[1], first.windows.shape[2]
    expression = ExpressionTokens(torch.cat([f.tokens for f in faces]), torch.cat([f.windows for f in faces], dim=2),
                                  first.num_frames, first.tokens_per_frame)
    return Combined(expression, build_mask(labels, n, win, t_lat, background),
                    query_scales(labels, strengths or [1.0] * n), regions, labels, [note] if note else [])


def draw_regions(image: np.ndarray, regions, face_boxes=None) -> np.ndarray:
    """Preview: each person's region tinted in its colour and numbered (uint8 RGB)."""
    import cv2

    from ..motion.extraction import PERSON_COLOURS

    out = image.astype(np.float32).copy()
    for i, (x0, y0, x1, y1) in enumerate(regions):
        colour = np.array(PERSON_COLOURS[i % len(PERSON_COLOURS)], np.float32)
        out[y0:y1, x0:x1] = 0.55 * out[y0:y1, x0:x1] + 0.45 * colour
    out = out.clip(0, 255).astype(np.uint8)
    scale = max(1, round(max(image.shape[:2]) / 640))
    for i, (x0, y0, x1, y1) in enumerate(regions):
        colour = PERSON_COLOURS[i % len(PERSON_COLOURS)]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, 2 * scale)
        if face_boxes is not None:
            fx0, fy0, fx1, fy1 = [int(round(v)) for v in face_boxes[i]]
            cv2.rectangle(out, (fx0, fy0), (fx1, fy1), (255, 255, 255), scale)
        cv2.putText(out, str(i + 1), (x0 + 6 * scale, y0 + 28 * scale), cv2.FONT_HERSHEY_SIMPLEX, 1.0 * scale,
                    (255, 255, 255), 2 * scale, cv2.LINE_AA)
    return out
