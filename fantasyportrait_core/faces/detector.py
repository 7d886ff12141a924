"""Face detection as the released pipeline does it, and the optional insightface backend.

Detector (NanoDet-style, ``face_det.onnx``, input 160x272): centred letterbox keeping the ratio,
BGR mean/std normalisation, three strides 8/16/32 with GFL distribution boxes (reg_max 7),
score > 0.4, hard NMS at IoU 0.3, boxes mapped back and truncated to integers.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FantasyPortraitError
from .frames import check_frame, to_bgr
from .onnx_runtime import check_io, get_session

DET_INPUT_HW = (272, 160)
DET_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
DET_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
DET_STRIDES = (8, 16, 32)
DET_REG_MAX = 7
DET_SCORE_THRESHOLD = 0.4
DET_NMS_IOU = 0.3
DET_NMS_CANDIDATES = 200


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
        # the warp works per channel, so warping the RGB frame and flipping the small result to BGR gives the
        # same bytes as warping a BGR copy of the whole frame
        img = cv2.warpPerspective(frame_rgb, m, dsize=(w, h))[..., ::-1].astype(np.float32)
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
        faces = self.app.get(to_bgr(frame_rgb))
        if not faces:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = np.array([f.bbox for f in faces], dtype=np.float64)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_rgb.shape[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_rgb.shape[0])
        return boxes, np.array([f.det_score for f in faces], dtype=np.float64)
