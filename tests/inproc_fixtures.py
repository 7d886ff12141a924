"""Fixtures of the host test files (tests/host_*.py, run in a real ComfyUI's Python): import them there."""

import os

import pytest

from comfy_inproc import REPO, boot


@pytest.fixture(scope="module")
def H():
    """The booted host of one host test file (one ComfyUI boot per file)."""
    return boot(os.environ["COMFYUI_DIR"], REPO)


@pytest.fixture(scope="module")
def faces(H):
    """The released face models (skips without them)."""
    from media import model_path

    from fantasyportrait_pack.fantasyportrait_core.faces.detector import FaceDetector
    from fantasyportrait_pack.fantasyportrait_core.faces.landmarks import LandmarkModel
    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import FaceModels

    return FaceModels(FaceDetector(model_path("face_det.onnx")), LandmarkModel(model_path("face_landmark.onnx")))


def error_of(fn):
    """The message of what ``fn()`` raises, or None."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None
