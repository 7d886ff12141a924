"""Helpers shared by the node modules: the pack's own IO types, model folders, progress bars."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..fantasyportrait_core.errors import FantasyPortraitError
from ..fantasyportrait_core.tokens.windows import check_clip_length

FOLDER = "fantasyportrait"
CATEGORY = "FantasyPortrait"

# The pack's own socket types (names unchanged since the first release, so saved workflows keep their links).
# What flows through each: the core object named beside it.
FaceModelsIO = io.Custom("FANTASYPORTRAIT_FACE_MODELS")  # motion.extraction.FaceModels
AdapterIO = io.Custom("FANTASYPORTRAIT_MODEL")  # tokens.checkpoint.FantasyPortraitAdapter
TracksIO = io.Custom("FANTASYPORTRAIT_TRACKS")  # motion.extraction.TrackedFaces
FeaturesIO = io.Custom("FANTASYPORTRAIT_FEATURES")  # motion.extraction.ExpressionFeatures
EmbedsIO = io.Custom("FANTASYPORTRAIT_EMBEDS")  # branch.embeds.PortraitEmbeds


def node_schema(node: type, title: str, family: str, inputs: list, outputs: list) -> io.Schema:
    """A node's V3 schema: id = its class name (what saved workflows refer to), shown as
    "FantasyPortrait <title>" in category FantasyPortrait/<family>, described by its docstring
    (the tooltip on the node; the docs panel shows ``web/docs/<id>.md``)."""
    return io.Schema(node_id=node.__name__, display_name=f"{CATEGORY} {title}", category=f"{CATEGORY}/{family}",
                     description=" ".join(node.__doc__.split()), inputs=inputs, outputs=outputs)


def output(kind, name: str, tooltip: str | None = None):
    """An output socket shown as ``name``. Its id gets a suffix: V3 ids must differ from every input's
    id, and several nodes pass a value through (an ``fps`` input and an ``fps`` output)."""
    return kind.Output(f"{name}_out", display_name=name, tooltip=tooltip)


def check_length_widget(value, name: str, maximum: int) -> bool | str:
    """For a node's ``validate_inputs``: True, or why a frame-count widget (0 or 4k+1) is refused. ComfyUI
    calls it when the prompt is queued, so a bad value fails at once instead of after minutes of face
    tracking; it skips its own min/max check for such a widget, so the range is checked here too. A value
    that arrives through a link is not known then (None) and is checked when the node runs."""
    if value is None:
        return True
    if value > maximum:
        return f"{name} is {value}, more than its maximum {maximum}."
    try:
        check_clip_length(value, name)
    except FantasyPortraitError as exc:
        return str(exc)
    return True


def register_model_folder() -> None:
    """``models/fantasyportrait/`` (also settable in extra_model_paths.yaml as ``fantasyportrait``)."""
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | {".ckpt", ".pth", ".safetensors", ".onnx"})


def adapter_files() -> list[str]:
    """Adapter files: everything in ``models/fantasyportrait/`` plus files in ``diffusion_models/``
    whose name mentions FantasyPortrait (Kijai's single-file release lives there)."""
    own = [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith((".ckpt", ".safetensors", ".pth"))
           and "pd_fpg" not in f.lower()]
    extra = [f for f in folder_paths.get_filename_list("diffusion_models") if "portrait" in f.lower()]
    return sorted(set(own)) + sorted(set(extra) - set(own))


def model_path(name: str) -> str:
    """A file chosen in a loader: from ``models/fantasyportrait/`` or ``models/diffusion_models/``."""
    path = folder_paths.get_full_path(FOLDER, name) or folder_paths.get_full_path("diffusion_models", name)
    if path is None:
        raise FantasyPortraitError(f"FantasyPortrait model file {name!r} not found in models/{FOLDER}/ or "
                                   "models/diffusion_models/: put it there, or pick another file.")
    return path


class Progress:
    """Bridge from core ``progress(done, total)`` callbacks to ComfyUI's progress bar, with interruption."""

    def __init__(self, total: int):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(total)

    def __call__(self, done: int, total: int) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update_absolute(done, total)


DEFAULT_FPS = 25.0  # the released frame rate, for motion whose rate is unknown
PREVIEW_SIDE = 512  # long side of the tracking preview (a full-resolution float copy of a long clip is GBs)
log = logging.getLogger("FantasyPortrait")


def to_image(arr):
    """uint8 ``[..., H, W, 3]`` -> ComfyUI IMAGE (float 0..1)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
