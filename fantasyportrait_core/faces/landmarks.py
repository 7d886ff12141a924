"""The released 222-point landmarks (``face_landmark.onnx``, 128x128 crop, input /255).

The crop is placed by a box (expanded by 0.15) or by the previous landmarks, then refined 3 times,
each pass re-warping by the previous landmarks and the roll angle measured from eye corners 74/96.
This path mirrors the released numerics (float32 points, OpenCV's transforms): the refinement
re-samples the frame each pass, so a 1e-7 difference in a crop transform can move the final landmarks
by a tenth of a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .onnx_runtime import check_io, get_session

LMK_SIZE = 128
LMK_EXPAND = 0.15
LMK_PASSES = 3
LMK_COUNT = 222  # points per face of the released landmark model
EYE_CORNERS = (74, 96)
FACE_PROB_THRESHOLD = 1e-4


def _transform(pts: np.ndarray, m: np.ndarray, invert: bool = False) -> np.ndarray:
    import cv2

    if invert:
        m = cv2.invertAffineTransform(m)
    pts = np.asarray(pts, dtype=np.float32)
    return cv2.transform(pts[:, None, :], m)[:, 0, :]


def warp_from_box(box, size: int = LMK_SIZE, expand: float = LMK_EXPAND) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 0.0, float(size / max(x1 - x0, y1 - y0) * (1 - expand)))
    m[:, 2] += [size / 2 - cx, size / 2 - cy]
    return m


def warp_from_points(pts: np.ndarray, angle_deg: float, size: int = LMK_SIZE, expand: float = LMK_EXPAND) -> np.ndarray:
    """Crop transform centred on the landmarks' extent after rotating by ``angle_deg``."""
    import cv2

    cx, cy = (np.min(pts[:, 0]) + np.max(pts[:, 0])) / 2, (np.min(pts[:, 1]) + np.max(pts[:, 1])) / 2
    center = (float(cx), float(cy))
    rotated = _transform(pts, cv2.getRotationMatrix2D(center, float(angle_deg), 1.0))
    scale = size / max(np.max(rotated[:, 0]) - np.min(rotated[:, 0]), np.max(rotated[:, 1]) - np.min(rotated[:, 1])) * (1 - expand)
    m = cv2.getRotationMatrix2D(center, float(angle_deg), float(scale))
    scaled = _transform(pts, m)
    c2x = (np.min(scaled[:, 0]) + np.max(scaled[:, 0])) / 2
    c2y = (np.min(scaled[:, 1]) + np.max(scaled[:, 1])) / 2
    m[:, 2] += [size / 2 - c2x, size / 2 - c2y]
    return m


def eye_roll(pts: np.ndarray):
    """Angle (radians) of the line from eye corner 74 to eye corner 96, of ``[222, 2]`` landmarks (or per frame of
    ``[F, 222, 2]``)."""
    left, right = pts[..., EYE_CORNERS[0], :], pts[..., EYE_CORNERS[1], :]
    return np.arctan2(right[..., 1] - left[..., 1], right[..., 0] - left[..., 0] + 1e-8)


@dataclass
class LandmarkResult:
    points: np.ndarray  # [222, 2] frame pixels
    euler: np.ndarray   # pitch, yaw (model output, radians) and roll (from the eye corners)
    prob: float


class LandmarkModel:
    def __init__(self, path: str, providers=None):
        self.path = path
        self.session = get_session(path, providers)
        check_io(self.session, path, {"data": [1, 3, 128, 128]}, outputs=3)
        self.output_names = ["output_landmarks", "output_euler", "output_prob"]

    def _infer(self, frame_rgb: np.ndarray, m: np.ndarray):
        import cv2

        crop = cv2.warpAffine(frame_rgb, m, (LMK_SIZE, LMK_SIZE))[..., ::-1]  # BGR, as the model was trained
        inp = crop.transpose(2, 0, 1).astype(np.float32)[None] / 255.0
        lmk, euler, prob = self.session.run(self.output_names, {"data": inp})
        local = lmk[0].reshape(2, -1).T * np.float32(LMK_SIZE)  # planar: x..., then y...
        euler = np.array([euler[0, 0], euler[0, 1], eye_roll(local)], dtype=np.float32)
        return _transform(local, m, invert=True), euler, float(prob.reshape(-1)[0])

    def refine(self, frame_rgb: np.ndarray, box=None, points=None, passes: int = LMK_PASSES) -> LandmarkResult:
        """222 landmarks of the face at ``box`` (a detection) or near ``points`` (the previous frame's)."""
        if points is not None:
            m = warp_from_points(points, np.rad2deg(eye_roll(points)))
        elif box is not None:
            m = warp_from_box(box)
        else:
            raise ValueError("refine needs a box or points")
        pts, euler, prob = self._infer(frame_rgb, m)
        for _ in range(passes - 1):
            m = warp_from_points(pts, np.rad2deg(euler[2]))
            pts, euler, prob = self._infer(frame_rgb, m)
        return LandmarkResult(pts, euler, prob)


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])
