"""ONNX Runtime sessions for the released face models.

No session is cached here: each face model holds its own, so it is freed with the model (ComfyUI's
node cache keeps the loaded face models while a graph uses them; a CUDA session held in a module-level
cache would keep GPU memory that ComfyUI's "free memory" cannot release).
"""

from __future__ import annotations

import logging
import os

from ..errors import FantasyPortraitError, require

log = logging.getLogger("FantasyPortrait")


def default_providers() -> list[str]:
    """CUDA when the installed ONNX Runtime build has it (onnxruntime-gpu), else the CPU."""
    ort = require("onnxruntime", "The face detector and landmark models", "onnxruntime")
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


def get_session(path: str, providers: list[str] | None = None):
    """A new ``InferenceSession`` for ``path``; a file that is not a usable ONNX model is named."""
    ort = require("onnxruntime", "The face detector and landmark models", "onnxruntime")
    if not os.path.isfile(path):
        raise FantasyPortraitError(f"Face model not found: {path}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=list(providers or default_providers()))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise FantasyPortraitError(
            f"{os.path.basename(path)} is not a usable ONNX model ({str(exc).splitlines()[0]}). "
            "Is the file complete and the right one?") from exc
    log.info("FantasyPortrait: %s runs on %s", os.path.basename(path), session.get_providers()[0])
    return session


def check_io(session, path: str, inputs: dict[str, list], outputs: int | None = None) -> None:
    """Refuse a model whose input names/shapes are not the expected ones (e.g. files swapped)."""
    got = {i.name: i.shape for i in session.get_inputs()}
    for name, shape in inputs.items():
        if name not in got or [d if isinstance(d, int) else None for d in got[name]] != shape:
            raise FantasyPortraitError(
                f"{os.path.basename(path)} has inputs {got}, expected {name} {shape}: "
                "is this the right model file (face_det.onnx / face_landmark.onnx)?")
    if outputs is not None and len(session.get_outputs()) != outputs:
        raise FantasyPortraitError(
            f"{os.path.basename(path)} has {len(session.get_outputs())} outputs, expected {outputs}: wrong model file?")
