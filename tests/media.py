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


def read_rgb(name: str):
    import cv2

    return cv2.imread(media_path(name))[..., ::-1].copy()
