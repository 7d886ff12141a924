"""Identity similarity of the output's faces to the portrait's, with insightface's ArcFace recognition model
(``w600k_r50.onnx`` of the buffalo_l pack, or another ArcFace ONNX with a 112x112 input) from a local folder, as
the SCRFD detector backend finds its files; nothing is downloaded. Faces are aligned to ArcFace's 5-point template
from the released landmarks (pupils, nose tip, mouth corners), so the insightface package itself is not needed."""

from __future__ import annotations

import glob
import os

import numpy as np

from ..errors import FantasyPortraitError
from ..faces.align import ALIGN_LANDMARKS, umeyama_similarity
from ..faces.onnx_runtime import get_session

#: ArcFace's alignment template (insightface ``arcface_dst``): eyes, nose tip, mouth corners in a 112x112 crop,
#: left to right as seen in the image
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]])
ARCFACE_SIZE = 112
PREFERRED = ("w600k_r50.onnx", "glintr100.onnx", "w600k_mbf.onnx")
SAMPLES = 16  # output frames compared with the portrait, spread over the clip


def find_arcface(folder: str) -> str | None:
    """The ArcFace model in ``folder`` (a preferred name first, else any ONNX whose input is 112x112), or None."""
    if not folder or not os.path.isdir(folder):
        return None
    for name in PREFERRED:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
        try:
            shape = get_session(path, ["CPUExecutionProvider"]).get_inputs()[0].shape
        except FantasyPortraitError:
            continue
        if list(shape[-3:]) == [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            return path
    return None


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The 5 alignment points of 222 landmarks in ArcFace's order (each pair left to right in the image)."""
    eye_a, eye_b, nose, mouth_a, mouth_b = np.asarray(landmarks, np.float64)[list(ALIGN_LANDMARKS)]
    eyes = sorted([eye_a, eye_b], key=lambda p: p[0])
    mouth = sorted([mouth_a, mouth_b], key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], nose, mouth[0], mouth[1]])


class ArcFace:
    def __init__(self, path: str, providers=None):
        self.path = path
        self.session = get_session(path, providers)
        inp = self.session.get_inputs()[0]
        if list(inp.shape[-3:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise FantasyPortraitError(f"{os.path.basename(path)} takes {inp.shape}, not a 112x112 face: is it an "
                                       "ArcFace recognition model (w600k_r50.onnx of buffalo_l)?")
        self.input_name = inp.name

    def embed(self, frame_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The unit-length identity embedding of the face at ``landmarks`` in an RGB uint8 frame."""
        import cv2

        m = umeyama_similarity(five_points(landmarks), ARCFACE_TEMPLATE)
        face = cv2.warpAffine(np.ascontiguousarray(frame_rgb), m, (ARCFACE_SIZE, ARCFACE_SIZE))
        x = ((face.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, as insightface feeds it
        e = self.session.run(None, {self.input_name: x})[0].reshape(-1).astype(np.float64)
        return e / max(np.linalg.norm(e), 1e-12)


def sample_frames(num_frames: int, most: int = SAMPLES) -> list[int]:
    return sorted(set(np.linspace(0, num_frames - 1, min(most, num_frames)).round().astype(int).tolist()))


def identity_similarity(arcface: ArcFace, frames, landmarks: np.ndarray, portrait: np.ndarray,
                        portrait_landmarks: np.ndarray) -> float:
    """Mean cosine similarity between the portrait face's embedding and the output face's, over up to 16 frames
    spread over the clip (1 = the same face; ArcFace's usual same-person threshold is about 0.3-0.4)."""
    ref = arcface.embed(portrait, portrait_landmarks)
    wanted = sample_frames(len(landmarks))
    sims = []
    for f, frame in enumerate(frames):  # a streamed clip is decoded only up to the last frame compared
        if f in wanted:
            sims.append(float(ref @ arcface.embed(np.asarray(frame), landmarks[f])))
        if f >= wanted[-1]:
            break
    return float(np.mean(sims))
