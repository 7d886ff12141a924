"""How closely one output face follows its driver: errors per motion component, mouth and head curves, jitter, the
best time offset and the motion correlation behind the leakage matrix.

Inputs are one face's PD-FGC features ``[F, 554]`` (head pose, eyes, emotion, mouth; identity-agnostic, which is why
the paper drives with them) and its 222 landmarks ``[F, 222, 2]``. Every comparison is on motion relative to the
first compared frame (``x[t] - x[0]``), so the identity of the face, and where it sits, do not count: only how it
moves. Output frame ``i`` is compared with driver frame ``i + offset``.
"""

from __future__ import annotations

import numpy as np

from ..faces.landmarks import EYE_CORNERS, eye_roll
from ..motion.features import FEATURE_SLICES

MOUTH_POINTS = slice(118, 182)  # the 222-point model's mouth (outer and inner lips; a smoothing region of its own)

#: the components of the feature errors: the report's key -> the feature slices it averages (emotion and mouth
#: weigh equally in expression_error, although the mouth has 512 numbers and the emotion 30)
ERROR_PARTS = {"head_pose_error": ("headpose",), "eye_error": ("eye",), "expression_error": ("emo", "mouth")}


def _part(features: np.ndarray, name: str) -> np.ndarray:
    start, stop = FEATURE_SLICES[name]
    return features[..., start:stop]


def relative(x: np.ndarray) -> np.ndarray:
    """Motion relative to the first frame."""
    return x - x[:1]


def overlap(n_out: int, n_drv: int, offset: int) -> tuple[slice, slice]:
    """The output and driver frames compared at ``offset`` (output frame i with driver frame i + offset)."""
    first = max(0, -offset)
    last = min(n_out, n_drv - offset)
    if last - first < 2:
        return slice(0, 0), slice(0, 0)
    return slice(first, last), slice(first + offset, last + offset)


def feature_errors(out: np.ndarray, drv: np.ndarray) -> dict[str, float]:
    """Mean absolute difference of the relative motion, per component (0 when the output moves exactly as the
    driver; in the features' own units)."""
    a, b = relative(out), relative(drv)
    return {key: float(np.mean([np.abs(_part(a, p) - _part(b, p)).mean() for p in parts]))
            for key, parts in ERROR_PARTS.items()}


def still_errors(drv: np.ndarray) -> dict[str, float]:
    """What :func:`feature_errors` gives for a face that does not move at all: the scale to read the errors
    against (an error near it means the output hardly follows that component)."""
    return feature_errors(np.repeat(drv[:1], len(drv), 0), drv)


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Per frame: the square root of the landmark box's area (pixels)."""
    span = landmarks.max(-2) - landmarks.min(-2)
    return np.sqrt(np.maximum(span[..., 0] * span[..., 1], 1e-6))


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Per frame: the mouth's height, measured across the head's roll, over the eye-corner distance."""
    left, right = landmarks[:, EYE_CORNERS[0]], landmarks[:, EYE_CORNERS[1]]
    across = right - left
    eye_dist = np.maximum(np.linalg.norm(across, axis=-1), 1e-6)
    down = np.stack([-across[:, 1], across[:, 0]], -1) / eye_dist[:, None]  # unit vector, perpendicular to the eyes
    mouth = landmarks[:, MOUTH_POINTS]
    heights = np.einsum("fkc,fc->fk", mouth, down)
    return (heights.max(1) - heights.min(1)) / eye_dist


def jitter(landmarks: np.ndarray) -> float:
    """Landmark acceleration: the mean size of ``L[t+1] - 2 L[t] + L[t-1]``, in percent of the face size. A smooth
    render stays near its driver's value; flicker and shaking raise it."""
    if len(landmarks) < 3:
        return 0.0
    acc = np.linalg.norm(landmarks[2:] - 2 * landmarks[1:-1] + landmarks[:-2], axis=-1).mean(-1)
    return float(100 * (acc / face_size(landmarks[1:-1])).mean())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over time of two signals (nan when either does not change)."""
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else float("nan")


def motion_correlation(out: np.ndarray, drv: np.ndarray) -> float:
    """How much the output's motion goes with the driver's, -1..1: per component, the correlation over time of each
    feature, weighted by how much the driver moves it, then the mean over the four components (one the driver does
    not move is left out). 1 when the output moves exactly as the driver."""
    scores = []
    for name in FEATURE_SLICES:
        a, b = _part(out, name), _part(drv, name)
        a, b = a - a.mean(0), b - b.mean(0)
        var_b = (b * b).sum(0)
        den = np.sqrt((a * a).sum(0) * var_b)
        ok = (den > 1e-12) & (var_b > 1e-12)
        if ok.any() and var_b[ok].sum() > 0:
            rho = (a * b).sum(0)[ok] / den[ok]
            scores.append(float((rho * var_b[ok]).sum() / var_b[ok].sum()))
    return float(np.mean(scores)) if scores else float("nan")


def best_offset(out: np.ndarray, drv: np.ndarray, max_offset: int) -> tuple[int, dict[int, float]]:
    """The offset (output frame i with driver frame i + offset, within +-``max_offset``) whose motion correlation is
    highest, and the correlation at every offset tried. Ties go to the offset nearest 0."""
    scores = {}
    for k in range(-max_offset, max_offset + 1):
        so, sd = overlap(len(out), len(drv), k)
        if so.stop - so.start >= max(3, min(len(out), len(drv)) // 2):  # at least half the clip in common
            scores[k] = motion_correlation(out[so], drv[sd])
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if not finite:
        return 0, scores
    top = max(finite.values())
    return min((k for k, v in finite.items() if v >= top - 1e-9), key=abs), scores


def compare_face(out_feat: np.ndarray, out_lmk: np.ndarray, drv_feat: np.ndarray, drv_lmk: np.ndarray,
                 max_offset: int) -> dict:
    """Every per-person number of the report for one output face and its driver (frames already matched in time:
    output frame i with driver frame i)."""
    n = min(len(out_feat), len(drv_feat))
    of, ol, df, dl = out_feat[:n], out_lmk[:n], drv_feat[:n], drv_lmk[:n]
    mouth_out, mouth_drv = mouth_opening(out_lmk), mouth_opening(drv_lmk)  # per frame: sliced below, not recomputed
    offset, _ = best_offset(out_feat, drv_feat, max_offset)
    so, sd = overlap(len(out_feat), len(drv_feat), offset)
    shifted = feature_errors(out_feat[so], drv_feat[sd])
    shifted["mouth_open_corr"] = pearson(mouth_out[so], mouth_drv[sd])
    return {**feature_errors(of, df), "mouth_open_corr": pearson(mouth_out[:n], mouth_drv[:n]),
            "jitter": jitter(ol), "jitter_driver": jitter(dl), "offset": int(offset),
            "motion_corr": motion_correlation(of, df), "still": still_errors(df), "at_offset": shifted,
            "curves": {"mouth_open": {"output": mouth_out[:n].round(4).tolist(),
                                      "driver": mouth_drv[:n].round(4).tolist()},
                       "head_roll": {"output": relative(np.degrees(eye_roll(ol))).round(3).tolist(),
                                     "driver": relative(np.degrees(eye_roll(dl))).round(3).tolist()}}}


def leakage_matrix(outputs: list[np.ndarray], drivers: list[np.ndarray]) -> np.ndarray:
    """``[N_out, N_drv]``: the motion correlation of every output face (rows) with every driver (columns), over the
    frames they share. Each face should go with its own driver (high) and not with the others (low)."""
    m = np.zeros((len(outputs), len(drivers)))
    for i, o in enumerate(outputs):
        for j, d in enumerate(drivers):
            n = min(len(o), len(d))
            m[i, j] = motion_correlation(o[:n], d[:n])
    return m
