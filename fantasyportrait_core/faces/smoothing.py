"""The released per-region adaptive one-euro filter over 222 landmarks (:class:`LandmarkSmoother`)."""

from __future__ import annotations

import math

import numpy as np

#: region -> (point indices, indices whose motion decides, stable threshold, low value, high value)
SMOOTH_REGIONS = (
    (range(0, 33), range(9, 24), 0.005, 0.05, 0.3),   # contour (decided by the lower contour)
    (range(33, 48), None, 0.003, 0.03, 0.7),          # nose
    (range(48, 74), None, 0.003, 0.02, 0.5),          # brows
    (range(74, 96), None, 0.003, 0.03, 0.7),          # left eye
    (range(96, 118), None, 0.003, 0.03, 0.7),         # right eye
    (range(118, 182), None, 0.003, 0.05, 0.7),        # mouth
    (range(182, 202), None, 0.003, 0.03, 0.7),        # left pupil
    (range(202, 222), None, 0.003, 0.03, 0.7),        # right pupil
)
SMOOTH_FAST = 0.02


def _smoothing_factor(t_e, cutoff):
    r = 2 * math.pi * cutoff * t_e
    return r / (r + 1)


class LandmarkSmoother:
    """The released adaptive one-euro smoothing of 222 landmarks.

    Per region, the mean motion since the last output (relative to the face size) picks a value
    ``v`` (0 when still, rising linearly to ``low`` at the stable threshold, then to ``high`` at
    0.02, ``high`` beyond); the region is filtered with a one-euro step whose time step and beta
    are both ``v`` (min_cutoff 1, d_cutoff 1), so slow motion is smoothed hard and fast motion
    passes. At ``v = 0`` (no motion at all) the released formula divides by zero; the limit
    (keep the previous output) is used instead.
    """

    def __init__(self):
        self.prev = None
        self.dx_prev = [0.0] * len(SMOOTH_REGIONS)

    def __call__(self, points: np.ndarray, face_size) -> np.ndarray:
        if self.prev is None:
            self.prev = points.copy()
            return points
        dist = np.sqrt(np.square(points[:, 0] - self.prev[:, 0]) + np.square(points[:, 1] - self.prev[:, 1])) / face_size
        out = points.copy()
        for r, (idx, decide, stable, low, high) in enumerate(SMOOTH_REGIONS):
            idx = list(idx)
            motion = np.mean(dist[list(decide or idx)])
            if motion < stable:
                v = low * (motion / stable)
            elif motion < SMOOTH_FAST:
                v = low + (high - low) * ((motion - stable) / (SMOOTH_FAST - stable))
            else:
                v = high
            x, x_prev = points[idx], self.prev[idx]
            if v <= 0:
                out[idx] = x_prev
                continue
            a_d = _smoothing_factor(v, 1.0)
            dx_hat = a_d * ((x - x_prev) / v) + (1 - a_d) * self.dx_prev[r]
            a = _smoothing_factor(v, 1.0 + v * np.abs(dx_hat))
            out[idx] = a * x + (1 - a) * x_prev
            self.dx_prev[r] = dx_hat
        self.prev = out
        return out
