"""ONNX Runtime sessions for the released face models, created once and reused."""

from __future__ import annotations

import os
import threading

from ..errors import FantasyPortraitError, require

_SESSIONS: dict = {}
_LOCK = threading.Lock()


def default_providers() -> list[str]:
    ort = require("onnxruntime", "The face detector and landmark models", "onnxruntime")
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


def get_session(path: str, providers: list[str] | None = None):
    """An ``InferenceSession`` for ``path``, cached by (file, size, mtime, providers)."""
    ort = require("onnxruntime", "The face detector and landmark models", "onnxruntime")
    if not os.path.isfile(path):
        raise FantasyPortraitError(f"Face model not found: {path}")
    providers = list(providers or default_providers())
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, tuple(providers))
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(path, sess_options=options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise FantasyPortraitError(
                    f"{os.path.basename(path)} is not a usable ONNX model ({str(exc).splitlines()[0]}). "
                    "Is the file complete and the right one?") from exc
            _SESSIONS[key] = session
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
