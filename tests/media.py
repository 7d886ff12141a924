"""Locating the real face models and test media (never committed; see DEVELOPERS.md)."""

import os

import pytest

from conftest import ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def models_dir() -> str:
    return os.environ.get("FANTASYPORTRAIT_TEST_MODELS") or os.path.join(SHARED, "models")


def model_path(name: str) -> str:
    path = os.path.join(models_dir(), name)
    if not os.path.isfile(path):
        pytest.skip(f"real face model {name} not found in {models_dir()} "
                    "(set FANTASYPORTRAIT_TEST_MODELS to the folder holding face_det.onnx and face_landmark.onnx)")
    return path


def media_path(name: str) -> str:
    path = os.path.join(SHARED, "media", name)
    if not os.path.isfile(path):
        pytest.skip(f"test media {name} not found in {os.path.dirname(path)}")
    return path


def read_frames(path: str, max_frames: int | None = None, fps: float | None = None):
    """Every frame of a clip or image (or its first ``max_frames``, after retiming to ``fps``) as one
    ``[F, H, W, 3]`` uint8 RGB array, decoded with the pack's own reader."""
    from fantasyportrait_core.video import DrivingFrames

    import numpy as np

    return np.stack(list(DrivingFrames(path, 0, max_frames or 0, fps)))


def preview_frames(frames, tracks, max_side=None):
    """The tracking preview of every frame as one array, from the pack's one-pass crops-and-preview loop."""
    from fantasyportrait_core.motion.extraction import crops_and_preview

    return crops_and_preview(frames, tracks, max_side, crops=False)[1]


def read_rgb(name: str):
    import cv2

    return cv2.imread(media_path(name))[..., ::-1].copy()
