"""Face detection, 222-point landmarks and landmark smoothing, as the released pipeline does them.

Input frames are RGB uint8 ``[H, W, 3]`` (ComfyUI IMAGE converted by :func:`to_uint8`); the
released models were trained on BGR (OpenCV) frames, so every model call converts to BGR.

* Detector (NanoDet-style, ``face_det.onnx``, input 160x272): centred letterbox keeping the
  ratio, BGR mean/std normalisation, three strides 8/16/32 with GFL distribution boxes
  (reg_max 7), score > 0.4, hard NMS at IoU 0.3, boxes mapped back and truncated to integers.
* Landmarks (``face_landmark.onnx``, 128x128 crop, input /255): the crop is placed by a box
  (expanded by 0.15) or by the previous landmarks, then refined 3 times, each pass re-warping
  by the previous landmarks and the roll angle measured from eye corners 74/96.
* Smoothing: the released per-region adaptive one-euro filter (:class:`LandmarkSmoother`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import FantasyPortraitError
from .onnx_runtime import check_io, get_session

DET_INPUT_HW = (272, 160)
DET_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
DET_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
DET_STRIDES = (8, 16, 32)
DET_REG_MAX = 7
DET_SCORE_THRESHOLD = 0.4
DET_NMS_IOU = 0.3
DET_NMS_CANDIDATES = 200

LMK_SIZE = 128
LMK_EXPAND = 0.15
LMK_PASSES = 3
LMK_COUNT = 222
EYE_CORNERS = (74, 96)
FACE_PROB_THRESHOLD = 1e-4
DEFAULT_MIN_FACE = 96
OVERLAP_IOU = 0.12


def to_uint8(image) -> np.ndarray:
    """ComfyUI IMAGE (float 0..1, RGB) -> uint8 RGB; uint8 input passes through."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.round(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _bgr(frame_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame_rgb[..., ::-1])


def check_frame(frame: np.ndarray, what: str = "frame") -> None:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FantasyPortraitError(f"The {what} must be an RGB image [H, W, 3]; got shape {frame.shape}.")
    if frame.shape[0] < 16 or frame.shape[1] < 16:
        raise FantasyPortraitError(
            f"The {what} is {frame.shape[1]}x{frame.shape[0]} pixels, too small to find a face in "
            "(faces need to be at least about 96 pixels tall).")


# ----------------------------------------------------------------------------------------------
# detector


def letterbox_matrix(src_wh, dst_wh) -> np.ndarray:
    """3x3 transform that scales ``src`` to fit ``dst`` keeping the ratio, centred."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    ratio = dh / sh if sw / sh < dw / dh else dw / sw
    centre = np.array([[1, 0, -sw / 2], [0, 1, -sh / 2], [0, 0, 1]], dtype=np.float64)
    scale = np.diag([ratio, ratio, 1.0])
    shift = np.array([[1, 0, dw / 2], [0, 1, dh / 2], [0, 0, 1]], dtype=np.float64)
    return shift @ scale @ centre


def box_iou(boxes: np.ndarray, box: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    lt = np.maximum(boxes[..., :2], box[..., :2])
    rb = np.minimum(boxes[..., 2:4], box[..., 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda b: np.prod(np.clip(b[..., 2:4] - b[..., :2], 0, None), axis=-1)
    return inter / (area(boxes) + area(box) - inter + eps)


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, candidates: int) -> np.ndarray:
    """Indices kept by greedy NMS, best first (released candidate cap and tie order)."""
    order = np.argsort(scores)[-candidates:]
    keep = []
    while len(order):
        best = order[-1]
        keep.append(best)
        if len(order) == 1:
            break
        order = order[:-1]
        order = order[box_iou(boxes[order], boxes[best][None]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


class FaceDetector:
    def __init__(self, path: str, providers=None):
        self.path = path
        self.session = get_session(path, providers)
        check_io(self.session, path, {"input.1": [1, 3, 272, 160]}, outputs=6)
        self.input_name = self.session.get_inputs()[0].name
        h, w = DET_INPUT_HW
        self._centres = []
        for stride in DET_STRIDES:
            rows, cols = np.arange(math.ceil(h / stride)), np.arange(math.ceil(w / stride))
            cc, rr = np.meshgrid(cols * stride, rows * stride)
            c = np.stack([cc.ravel(), rr.ravel()], 1).astype(np.float64)
            self._centres.append(np.concatenate([c, c], 1))

    def preprocess(self, frame_rgb: np.ndarray):
        import cv2

        h, w = DET_INPUT_HW
        m = letterbox_matrix((frame_rgb.shape[1], frame_rgb.shape[0]), (w, h))
        img = cv2.warpPerspective(_bgr(frame_rgb), m, dsize=(w, h)).astype(np.float32)
        img = (img / 255 - DET_MEAN / 255) / (DET_STD / 255)
        return img.transpose(2, 0, 1)[None], m

    def detect(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes ``[N, 4]`` (x0, y0, x1, y1; integer-valued floats) and scores ``[N]``."""
        check_frame(frame_rgb)
        inp, m = self.preprocess(frame_rgb)
        outputs = self.session.run(None, {self.input_name: inp})
        boxes, scores = [], []
        bins = np.arange(DET_REG_MAX + 1)
        for stride, centres, score, dist in zip(DET_STRIDES, self._centres, outputs[:3], outputs[3:]):
            d = dist.reshape(-1, DET_REG_MAX + 1).astype(np.float64)
            d = np.exp(d - d.max(1, keepdims=True))
            d = (d / d.sum(1, keepdims=True) @ bins).reshape(-1, 4) * stride
            boxes.append(centres + np.array([-1, -1, 1, 1]) * d)
            scores.append(score.reshape(-1))
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        keep = scores > DET_SCORE_THRESHOLD
        boxes, scores = boxes[keep], scores[keep]
        if not len(scores):
            return np.zeros((0, 4)), np.zeros(0)
        idx = hard_nms(boxes, scores, DET_NMS_IOU, DET_NMS_CANDIDATES)
        boxes, scores = boxes[idx], scores[idx]
        # back to frame pixels: transform the 4 corners, take their extent, clip, truncate
        inv = np.linalg.inv(m)
        corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)
        pts = np.concatenate([corners, np.ones((len(corners), 1))], 1) @ inv.T
        pts = (pts[:, :2] / pts[:, 2:3]).reshape(-1, 4, 2)
        out = np.concatenate([pts.min(1), pts.max(1)], 1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, frame_rgb.shape[1])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, frame_rgb.shape[0])
        return out.astype(np.float32).astype(np.int32).astype(np.float64), scores.astype(np.float64)


# ----------------------------------------------------------------------------------------------
# landmarks


# The landmark path mirrors the released numerics (float32 points, OpenCV's transforms): the
# 3-pass refinement re-samples the frame each pass, so a 1e-7 difference in a crop transform can
# move the final landmarks by a tenth of a pixel.


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
    """Angle (radians) of the line from eye corner 74 to eye corner 96."""
    left, right = pts[EYE_CORNERS[0]], pts[EYE_CORNERS[1]]
    return np.arctan2(right[1] - left[1], right[0] - left[0] + 1e-8)


def portrait_faces(image: np.ndarray, detector) -> np.ndarray:
    """Face boxes ``[N, 4]`` of a portrait (RGB uint8), left to right; a clear error when there is
    none, since the video would then animate nothing (no face follows the driver)."""
    check_frame(image, "portrait image")
    boxes = np.asarray(detector.detect(image)[0]).reshape(-1, 4)
    if len(boxes) == 0:
        raise FantasyPortraitError(
            f"No face was found in the portrait image ({image.shape[1]}x{image.shape[0]}): FantasyPortrait animates "
            "the face in it, so nothing would follow the driving video. Use a portrait where the face is clearly "
            "visible, roughly frontal and not tiny (at least about a tenth of the image's height).")
    return boxes[np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")]


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

    def _infer(self, bgr: np.ndarray, m: np.ndarray):
        import cv2

        crop = cv2.warpAffine(bgr, m, (LMK_SIZE, LMK_SIZE))
        inp = crop.transpose(2, 0, 1).astype(np.float32)[None] / 255.0
        lmk, euler, prob = self.session.run(self.output_names, {"data": inp})
        local = lmk[0].reshape(2, -1).T * np.float32(LMK_SIZE)  # planar: x..., then y...
        euler = np.array([euler[0, 0], euler[0, 1], eye_roll(local)], dtype=np.float32)
        return _transform(local, m, invert=True), euler, float(prob.reshape(-1)[0])

    def refine(self, frame_rgb: np.ndarray, box=None, points=None, passes: int = LMK_PASSES,
               bgr: np.ndarray | None = None) -> LandmarkResult:
        """222 landmarks of the face at ``box`` (a detection) or near ``points`` (the previous frame's)."""
        bgr = _bgr(frame_rgb) if bgr is None else bgr
        if points is not None:
            m = warp_from_points(points, np.rad2deg(eye_roll(points)))
        elif box is not None:
            m = warp_from_box(box)
        else:
            raise ValueError("refine needs a box or points")
        pts, euler, prob = self._infer(bgr, m)
        for _ in range(passes - 1):
            m = warp_from_points(pts, np.rad2deg(euler[2]))
            pts, euler, prob = self._infer(bgr, m)
        return LandmarkResult(pts, euler, prob)


# ----------------------------------------------------------------------------------------------
# smoothing

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


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


class InsightFaceDetector:
    """Optional detection backend: insightface's SCRFD through ``FaceAnalysis``, from a local model
    folder the user names (holding the SCRFD ``det_*.onnx``, e.g. ``models/insightface/models/buffalo_l``;
    nothing is downloaded).

    Same interface as :class:`FaceDetector`; landmarks still come from the released 222-point
    model, so only the boxes that seed new faces change.
    """

    def __init__(self, model_dir: str, det_size: int = 640, threshold: float = 0.5, providers=None):
        import glob
        import os

        from ..errors import require
        from .onnx_runtime import default_providers

        require("insightface", "The insightface detector backend", "insightface")
        from insightface.app import FaceAnalysis

        model_dir = os.path.abspath(model_dir)
        if not glob.glob(os.path.join(model_dir, "*.onnx")):
            raise FantasyPortraitError(
                f"No insightface model found in {model_dir}: put the SCRFD detector there (e.g. det_10g.onnx "
                "of buffalo_l); it is not downloaded automatically.")
        providers = list(providers or default_providers())
        try:
            # an absolute folder as the name: insightface uses it as is and downloads nothing
            self.app = FaceAnalysis(name=model_dir, root=os.path.dirname(model_dir), allowed_modules=["detection"],
                                    providers=providers)
            self.app.prepare(ctx_id=0 if "CUDAExecutionProvider" in providers else -1, det_thresh=threshold,
                             det_size=(det_size, det_size))
        except Exception as exc:  # insightface raises assertion and runtime errors of its own
            raise FantasyPortraitError(
                f"insightface could not load a face detector from {model_dir}: {type(exc).__name__}: {exc}") from exc

    def detect(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_frame(frame_rgb)
        faces = self.app.get(_bgr(frame_rgb))
        if not faces:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = np.array([f.bbox for f in faces], dtype=np.float64)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_rgb.shape[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_rgb.shape[0])
        return boxes, np.array([f.det_score for f in faces], dtype=np.float64)
