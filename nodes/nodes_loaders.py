"""FantasyPortrait loaders: the adapter, and the face models (detector, landmarks, PD-FGC encoder)."""

from __future__ import annotations

import torch

import comfy.model_management
import folder_paths

from ..fantasyportrait_core.tokens.checkpoint import load_adapter
from ..fantasyportrait_core.errors import FantasyPortraitError
from ..fantasyportrait_core.motion.extraction import FaceModels
from ..fantasyportrait_core.faces.models import FaceDetector, LandmarkModel
from ..fantasyportrait_core.motion.encoder import load_motion_encoder
from .common import CATEGORY, FOLDER, adapter_files, adapter_path, register_model_folder


register_model_folder()


class FantasyPortraitModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (adapter_files(), {"tooltip": "FantasyPortrait adapter: fantasyportrait_model.ckpt or "
                                             "Wan2_1_FantasyPortrait_fp16.safetensors, from models/fantasyportrait/ "
                                             "(or models/diffusion_models/)."}),
            "dtype": (["bf16", "fp16", "fp32"], {"default": "bf16", "tooltip": "Precision of the adapter weights."}),
        }}

    RETURN_TYPES = ("FANTASYPORTRAIT_MODEL",)
    RETURN_NAMES = ("adapter",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads the FantasyPortrait adapter (expression-token encoder and per-block projections)."

    def load(self, model_name, dtype):
        # ComfyUI's node cache keeps the loaded adapter while the graph uses it and releases it on "free memory"
        return (load_adapter(adapter_path(model_name), dtype=dtype),)


class FantasyPortraitFaceModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        onnx = [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(".onnx")]
        motion = [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith((".pth", ".safetensors"))]
        motion += [f for f in folder_paths.get_filename_list("diffusion_models") if "portrait" in f.lower()]
        return {"required": {
            "detector": (onnx, {"default": "face_det.onnx", "tooltip": "Released face detector face_det.onnx "
                                "(models/fantasyportrait/)."}),
            "landmarks": (onnx, {"default": "face_landmark.onnx", "tooltip": "Released 222-point landmark model "
                                 "face_landmark.onnx (models/fantasyportrait/)."}),
            "motion_encoder": (motion, {"tooltip": "PD-FGC motion encoder: pd_fpg.pth, or the single-file "
                                        "FantasyPortrait .safetensors (its pd_fpg. part is used)."}),
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: the GPU ComfyUI uses (ONNX models "
                                         "on CUDA when onnxruntime-gpu is installed); cpu: keep the face models off "
                                         "the GPU."}),
        }, "optional": {
            "insightface_dir": ("STRING", {"default": "", "tooltip": "Optional: a local insightface model folder "
                                           "(e.g. models/insightface/models/buffalo_l) to detect faces with SCRFD "
                                           "instead of the released detector. Needs the insightface package."}),
        }}

    RETURN_TYPES = ("FANTASYPORTRAIT_FACE_MODELS",)
    RETURN_NAMES = ("face_models",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads the face detector, landmark model and motion encoder once; reused across runs."

    def load(self, detector, landmarks, motion_encoder, device, insightface_dir=""):
        def full(name):
            path = folder_paths.get_full_path(FOLDER, name) or folder_paths.get_full_path("diffusion_models", name)
            if path is None:
                raise FantasyPortraitError(f"{name} not found in models/{FOLDER}/.")
            return path

        paths = [full(detector), full(landmarks), full(motion_encoder)]
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        enc = load_motion_encoder(paths[2])
        if insightface_dir.strip():
            from ..fantasyportrait_core.faces.models import InsightFaceDetector

            det = InsightFaceDetector(insightface_dir.strip(), providers=providers)
        else:
            det = FaceDetector(paths[0], providers)
        models = FaceModels(det, LandmarkModel(paths[1], providers), enc)
        models.torch_device = comfy.model_management.get_torch_device() if device == "auto" else torch.device("cpu")
        return (models,)


NODE_CLASS_MAPPINGS = {
    "FantasyPortraitModelLoader": FantasyPortraitModelLoader,
    "FantasyPortraitFaceModelLoader": FantasyPortraitFaceModelLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FantasyPortraitModelLoader": "FantasyPortrait Model Loader",
    "FantasyPortraitFaceModelLoader": "FantasyPortrait Face Model Loader",
}
