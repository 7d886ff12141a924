"""Alignment of a face to the motion encoder's 224x224 crop (released template)."""

from __future__ import annotations

import numpy as np

#: landmarks used for alignment, of the 222-point model: two pupils, nose tip, mouth corners
ALIGN_LANDMARKS = (182, 202, 36, 149, 133)
CROP_SIZE = 224
#: where those five points go in the crop, as fractions of its side
ALIGN_TEMPLATE = np.array(
    [[0.3843, 0.27], [0.62, 0.2668], [0.503, 0.4185], [0.406, 0.5273], [0.5977, 0.525]], dtype=np.float64)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst as 2x3.

    Umeyama (1991), with the reflection correction.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(cov) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var_s = (s0 ** 2).sum() / len(src)
    scale = (sig * np.diag(fix)).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def alignment_matrix(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 transform from frame pixels to the aligned crop, from 222 landmarks ``[222, 2]``."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(ALIGN_LANDMARKS)]
    return umeyama_similarity(pts, ALIGN_TEMPLATE * size)


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The aligned ``size x size`` crop (bicubic, black border) of an ``[H, W, 3]`` frame."""
    import cv2

    m = alignment_matrix(landmarks, size)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_CUBIC)
