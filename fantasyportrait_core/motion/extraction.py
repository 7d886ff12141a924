"""Driving frames -> face tracks -> aligned crops -> per-person expression features."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..faces.align import CROP_SIZE, align_face
from ..errors import FantasyPortraitError
from ..faces.detector import FaceDetector
from ..faces.frames import to_uint8
from ..faces.landmarks import LandmarkModel
from .encoder import MotionEncoder, crops_to_tensor, load_motion_encoder
from ..faces.tracking import DEFAULT_MIN_FACE, FaceTracks, keep_persons, track_faces
from ..video import DrivingFrames

MODEL_FILES = {"detector": "face_det.onnx", "landmarks": "face_landmark.onnx", "motion": "pd_fpg.pth"}

ProgressFn = Callable[[int, int], None]  # progress(done, total); the nodes pass a ComfyUI progress bar


@dataclass
class FaceModels:
    """The three released face models, and the torch device the motion encoder runs on."""
    detector: FaceDetector
    landmarker: LandmarkModel
    motion_encoder: MotionEncoder | None = None
    device: torch.device = torch.device("cpu")


def load_face_models(models_dir: str | None = None, detector: str | None = None, landmarks: str | None = None,
                     motion: str | None = None, providers=None, dtype=torch.float32, operations=torch.nn) -> FaceModels:
    """Load the released face models from a folder holding the released file names, or from paths
    (``operations``: the motion encoder's layers, see :mod:`.encoder`)."""
    def path_of(kind, given):
        if given:
            return given
        if models_dir is None:
            raise FantasyPortraitError(f"No path given for {MODEL_FILES[kind]}.")
        return os.path.join(models_dir, MODEL_FILES[kind])

    if models_dir is not None and not os.path.isdir(models_dir):
        raise FantasyPortraitError(f"Models folder not found: {models_dir}")
    det = FaceDetector(path_of("detector", detector), providers)
    lmk = LandmarkModel(path_of("landmarks", landmarks), providers)
    motion_path = path_of("motion", motion) if (motion or models_dir) else None
    enc = None
    if motion_path is not None:
        if not os.path.isfile(motion_path):
            raise FantasyPortraitError(
                f"Motion encoder not found: {motion_path}. Put pd_fpg.pth there, or use the single-file "
                "FantasyPortrait safetensors, which contains it under 'pd_fpg.'.")
        enc = load_motion_encoder(motion_path, dtype, operations)
    return FaceModels(det, lmk, enc)


def frames_to_uint8(frames):
    """ComfyUI IMAGE tensor / float array / uint8 array -> uint8 RGB ``[F, H, W, 3]``; a lazily
    decoded clip (:class:`~..video.DrivingFrames`, already uint8 RGB) passes through undecoded."""
    if isinstance(frames, DrivingFrames):
        return frames
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise FantasyPortraitError(f"Frames must be [frames, height, width, 3]; got shape {frames.shape}.")
    return to_uint8(frames[..., :3])


def _align_into(faces: np.ndarray, f: int, frame: np.ndarray, tracks: FaceTracks) -> None:
    """Every person's aligned face of frame ``f`` into ``faces[:, f]``."""
    for p in range(tracks.num_persons):
        faces[p, f] = align_face(frame, tracks.landmarks[p, f], CROP_SIZE)


def aligned_crops(frames, tracks: FaceTracks) -> np.ndarray:
    """``[P, F, 224, 224, 3]`` uint8 aligned faces (released template, bicubic); ``frames`` is
    iterated once."""
    out = np.zeros((tracks.num_persons, tracks.num_frames, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for f, frame in enumerate(frames):
        _align_into(out, f, np.asarray(frame), tracks)
    return out


def default_batch_size(device) -> int:
    """Measured on a 2-core CPU, channels-last: batch 1 is fastest there (1.2 s per 32 faces; 1.5 s
    at batch 4, 2.2 s at 32: larger batches spill the hourglass activations out of cache). GPUs,
    where each call costs hundreds of kernel launches, want large batches."""
    return 1 if torch.device(device).type == "cpu" else 32


@torch.inference_mode()
def encode_crops(encoder: MotionEncoder, crops: np.ndarray, batch_size: int | None = None, device=None,
                 progress: ProgressFn | None = None) -> torch.Tensor:
    """``[N, 224, 224, 3]`` uint8 crops -> ``[N, 554]`` float32 features, in batches (channels-last)."""
    param = next(encoder.parameters())
    device = device or param.device
    batch_size = batch_size or default_batch_size(device)
    encoder.to(memory_format=torch.channels_last)
    out = []
    for start in range(0, len(crops), batch_size):
        x = crops_to_tensor(crops[start:start + batch_size]).to(device=device, dtype=param.dtype,
                                                                 memory_format=torch.channels_last)
        out.append(encoder(x).float().cpu())
        if progress is not None:
            progress(min(start + batch_size, len(crops)), len(crops))
    return torch.cat(out) if out else torch.zeros(0, 554)


@dataclass
class TrackedFaces:
    """A driving clip's faces, as the Face Tracker hands them on: the tracks, the aligned faces the
    motion encoder sees (``crops``: ``[P, F, 224, 224, 3]`` uint8) and the clip's frame rate."""
    tracks: FaceTracks
    crops: np.ndarray
    fps: float | None = None


@dataclass
class ExpressionFeatures:
    """Per-person expression features (``features``: ``[P, F, 554]`` float32), the tracks they came
    from (None when made without the tracker: then only one person can be meant) and the frame rate."""
    features: torch.Tensor
    tracks: FaceTracks | None = None
    fps: float | None = None

    @property
    def notes(self) -> list[str]:
        return self.tracks.notes if self.tracks is not None else []


def check_driving_frames(count: int, source: str = "the driving clip") -> None:
    """A driving clip needs motion: refuse a single frame (or none)."""
    if count < 2:
        raise FantasyPortraitError(
            f"{source} has {'a single frame' if count == 1 else 'no frames'}; a driving clip needs motion: use a "
            "video (Wan makes 4k+1 frames, so at least 5).")


def extract_features(frames, models: FaceModels, min_face: float = DEFAULT_MIN_FACE, persons: int = 0,
                     batch_size: int | None = None, fps: float | None = None, source: str = "the driving clip",
                     progress: ProgressFn | None = None) -> ExpressionFeatures:
    """The whole face pipeline on one clip. ``progress(done, total)`` covers tracking and encoding."""
    if models.motion_encoder is None:
        raise FantasyPortraitError("No motion encoder loaded (pd_fpg.pth): cannot extract expression features.")
    frames = frames_to_uint8(frames)
    n = len(frames)
    check_driving_frames(n, source)
    if fps is None and isinstance(frames, DrivingFrames):
        fps = frames.fps
    total = 3 * n  # two tracking passes, then the encoder
    tracks = track_faces(frames, models.detector, models.landmarker, min_face=min_face, source=source,
                         progress=(lambda d, t: progress(d, total)) if progress else None)
    tracks = keep_persons(tracks, persons)
    crops = aligned_crops(frames, tracks).reshape(-1, CROP_SIZE, CROP_SIZE, 3)
    feats = encode_crops(models.motion_encoder, crops, batch_size,
                         progress=(lambda d, t: progress(2 * n + d * n // max(t, 1), total)) if progress else None)
    return ExpressionFeatures(feats.reshape(tracks.num_persons, n, -1), tracks, fps)


PERSON_COLOURS = [(230, 60, 60), (60, 160, 230), (80, 200, 80), (230, 180, 40), (180, 90, 220), (40, 200, 200)]


def _draw(frame: np.ndarray, f: int, tracks: FaceTracks, landmarks: bool, max_side: int | None) -> np.ndarray:
    """One preview frame: every person's box, id and landmarks (thin box where filled), shrunk so its
    long side is at most ``max_side`` when given."""
    import cv2

    img = np.array(frame, copy=True)
    height, width = img.shape[:2]
    scale = max(1, round(max(height, width) / 640))
    for p in range(tracks.num_persons if f < tracks.num_frames else 0):
        colour = PERSON_COLOURS[p % len(PERSON_COLOURS)]
        x0, y0, x1, y1 = [int(round(v)) for v in tracks.boxes[p, f]]
        found = bool(tracks.valid[p, f])
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2 * scale if found else scale)
        label = f"{p}" if found else f"{p} (filled)"
        cv2.putText(img, label, (x0, max(0, y0 - 6 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                    2 * scale, cv2.LINE_AA)
        if landmarks:
            for x, y in tracks.landmarks[p, f]:
                cv2.circle(img, (int(round(x)), int(round(y))), scale, colour, -1)
    shrink = min(1.0, max_side / max(height, width)) if max_side else 1.0
    if shrink < 1:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


def iter_preview(frames, tracks: FaceTracks, landmarks: bool = True, max_side: int | None = None):
    """Yields each preview frame (see :func:`_draw`); ``frames`` (an array or a lazily decoded clip) is
    iterated once, one frame at a time."""
    for f, frame in enumerate(frames_to_uint8(frames)):
        yield _draw(np.asarray(frame), f, tracks, landmarks, max_side)


def preview_indices(num_frames: int, most: int | None) -> np.ndarray:
    """The frames a preview shows: all of them, or ``most`` spread evenly from the first to the last."""
    if not most or num_frames <= most:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, most)).astype(np.int64))


def crops_and_preview(frames, tracks: FaceTracks, max_side: int | None = None, crops: bool = True,
                      landmarks: bool = True, progress: ProgressFn | None = None,
                      preview_frames: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """The aligned faces (as :func:`aligned_crops`) and the preview (as :func:`iter_preview` draws it, with
    ``max_side`` shrunk frame by frame, never a full-size copy of the clip) in one
    pass over ``frames``, so a lazily decoded clip is decoded once for both; ``progress(done, total)``
    after each frame. ``preview_frames``: the preview shows at most this many frames, spread over the clip
    (:func:`preview_indices`), so a long clip's preview stays small."""
    faces = np.zeros((tracks.num_persons, tracks.num_frames, CROP_SIZE, CROP_SIZE, 3), np.uint8) if crops else None
    shown = preview_indices(len(frames), preview_frames)
    slot = {int(f): i for i, f in enumerate(shown)}
    preview = None
    for f, frame in enumerate(frames_to_uint8(frames)):
        frame = np.asarray(frame)
        if crops:
            _align_into(faces, f, frame, tracks)
        if f in slot:
            img = _draw(frame, f, tracks, landmarks, max_side)
            if preview is None:
                preview = np.empty((len(shown),) + img.shape, np.uint8)
            preview[slot[f]] = img
        if progress is not None:
            progress(f + 1, len(frames))
    return faces, preview
