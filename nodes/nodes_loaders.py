"""FantasyPortrait loaders: the adapter, and the face models (detector, landmarks, PD-FGC encoder)."""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.ops
import folder_paths
from comfy_api.latest import io

from ..fantasyportrait_core.faces.detector import FaceDetector
from ..fantasyportrait_core.faces.landmarks import LandmarkModel
from ..fantasyportrait_core.motion.encoder import load_motion_encoder
from ..fantasyportrait_core.motion.extraction import FaceModels
from ..fantasyportrait_core.tokens.checkpoint import load_adapter
from .common import (FOLDER, AdapterIO, FaceModelsIO, adapter_files, model_path, node_schema, output,
                     register_model_folder)

register_model_folder()

#: the layers of the pack's small models inside ComfyUI: ComfyUI's own (made without a random init, as its models
#: are; the weights are then loaded strictly), with torch's BatchNorm, which comfy.ops does not have
OPERATIONS = comfy.ops.disable_weight_init


class FantasyPortraitModelLoader(io.ComfyNode):
    """Loads the FantasyPortrait adapter (expression-token encoder and per-block projections)."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Model Loader", "loaders", inputs=[
            io.Combo.Input("model_name", options=adapter_files(), tooltip="FantasyPortrait adapter: "
                           "fantasyportrait_model.ckpt or Wan2_1_FantasyPortrait_fp16.safetensors, from "
                           "models/fantasyportrait/ (or models/diffusion_models/)."),
            io.Combo.Input("dtype", options=["bf16", "fp16", "fp32"], default="bf16",
                           tooltip="Precision of the per-block K/V projections (the token "
                           "encoder always runs in fp32, as released)."),
        ], outputs=[output(AdapterIO, "adapter", "For FantasyPortrait Encode and the Sampler or Apply.")])

    @classmethod
    def execute(cls, model_name, dtype) -> io.NodeOutput:
        # ComfyUI's node cache keeps the loaded adapter while the graph uses it and releases it on "free memory"
        return io.NodeOutput(load_adapter(model_path(model_name), dtype=dtype, operations=OPERATIONS))


class FantasyPortraitFaceModelLoader(io.ComfyNode):
    """Loads the face detector, landmark model and motion encoder once; reused across runs."""

    @classmethod
    def define_schema(cls):
        own = folder_paths.get_filename_list(FOLDER)
        onnx = [f for f in own if f.lower().endswith(".onnx")]
        motion = [f for f in own if f.lower().endswith((".pth", ".safetensors"))]
        motion += [f for f in folder_paths.get_filename_list("diffusion_models") if "portrait" in f.lower()]
        return node_schema(cls, "Face Model Loader", "loaders", inputs=[
            io.Combo.Input("detector", options=onnx, default="face_det.onnx", tooltip="Released face detector "
                           "face_det.onnx (models/fantasyportrait/)."),
            io.Combo.Input("landmarks", options=onnx, default="face_landmark.onnx", tooltip="Released 222-point "
                           "landmark model face_landmark.onnx (models/fantasyportrait/)."),
            io.Combo.Input("motion_encoder", options=motion, tooltip="PD-FGC motion encoder: pd_fpg.pth, or the "
                           "single-file FantasyPortrait .safetensors (its pd_fpg. part is used)."),
            io.Combo.Input("device", options=["auto", "cpu"], default="auto", tooltip="auto: the GPU ComfyUI uses "
                           "(ONNX models on CUDA when onnxruntime-gpu is installed); cpu: keep the face models "
                           "off the GPU."),
            io.String.Input("insightface_dir", default="", optional=True, tooltip="Optional: a local insightface "
                            "model folder (e.g. models/insightface/models/buffalo_l) to detect faces with SCRFD "
                            "instead of the released detector. Needs the insightface package."),
        ], outputs=[output(FaceModelsIO, "face_models", "For the Face Tracker, the Expression Extractor, Output Size "
                                                        "and Multi-Portrait Combine.")])

    @classmethod
    def execute(cls, detector, landmarks, motion_encoder, device, insightface_dir="") -> io.NodeOutput:
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        paths = [model_path(detector), model_path(landmarks), model_path(motion_encoder)]
        enc = load_motion_encoder(paths[2], operations=OPERATIONS)
        if insightface_dir.strip():
            from ..fantasyportrait_core.faces.detector import InsightFaceDetector

            det = InsightFaceDetector(insightface_dir.strip(), providers=providers)
        else:
            det = FaceDetector(paths[0], providers)
        torch_device = comfy.model_management.get_torch_device() if device == "auto" else torch.device("cpu")
        return io.NodeOutput(FaceModels(det, LandmarkModel(paths[1], providers), enc, torch_device))


NODES = [FantasyPortraitModelLoader, FantasyPortraitFaceModelLoader]
