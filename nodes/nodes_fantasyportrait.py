"""FantasyPortrait nodes: loaders, face tracking, expression extraction, encoding, the patched Wan
sampler, and the MODEL-patch + GUIDER pair for SamplerCustomAdvanced. Logic lives in
``fantasyportrait_core``; these classes only translate ComfyUI types."""

from __future__ import annotations

import logging

import numpy as np
import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview

from ..fantasyportrait_core.tokens.adapter import GroupScales
from ..fantasyportrait_core.tokens.checkpoint import load_adapter
from ..fantasyportrait_core.tokens.encoding import PortraitEmbeds, encode_features
from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.motion.extraction import (FaceModels, aligned_crops, check_driving_frames, draw_preview,
                                               encode_crops, frames_to_uint8)
from ..fantasyportrait_core.branch.conditioning import PortraitConditioning
from ..fantasyportrait_core.faces.models import FaceDetector, LandmarkModel, portrait_faces
from ..fantasyportrait_core.motion.encoder import load_motion_encoder
from ..fantasyportrait_core.faces.tracking import keep_persons, largest_person, track_faces
from ..fantasyportrait_core.tokens.windows import check_clip_length, fit_frame_count, frame_count_of_latent
from .common import CATEGORY, FOLDER, Progress, adapter_files, adapter_path, register_model_folder

log = logging.getLogger("FantasyPortrait")
register_model_folder()
DEFAULT_FPS = 25.0  # the released frame rate, for motion whose rate is unknown
PREVIEW_SIDE = 512  # long side of the tracking preview (a full-resolution float copy of a long clip is GBs)


def _to_image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0


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
    CATEGORY = CATEGORY
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
    CATEGORY = CATEGORY
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


def _video_source(video):
    """Core VIDEO -> what PyAV can open (a path or a BytesIO), without decoding its frames."""
    get = getattr(video, "get_stream_source", None)
    return get() if callable(get) else None


class FantasyPortraitFaceTracker:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_models": ("FANTASYPORTRAIT_FACE_MODELS", {"tooltip": "From FantasyPortrait Face Model Loader."}),
            "min_face": ("INT", {"default": 96, "min": 16, "max": 1024, "tooltip": "Smallest face kept (landmark box "
                                 "side, pixels). The released value is 96; lower it for small faces."}),
            "persons": ("INT", {"default": 0, "min": 0, "max": 16, "tooltip": "Keep the N persons found in most "
                                "frames (0 = everyone). Persons are numbered left to right."}),
        }, "optional": {
            "video": ("VIDEO", {"tooltip": "Driving video straight from Load Video: only the frames used are decoded, "
                                "one at a time, so a long clip costs no more memory than a short one. Use this or "
                                "images."}),
            "images": ("IMAGE", {"tooltip": "Driving frames as images (e.g. from Get Video Components), instead of "
                                 "video. They are already all in memory; the frame window below still applies."}),
            "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "Skip this many frames of "
                                    "the clip (counted at the fps below)."}),
            "length": ("INT", {"default": 81, "min": 0, "max": 100_000, "tooltip": "Frames to use from start_frame: "
                               "4k+1 (81 as released, about 3 s at 25 fps), or 0 for the whole clip."}),
            "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.01, "tooltip": "Retime the video "
                              "to this frame rate (nearest frame) before taking the frames; the released multi-person "
                              "code uses 25. 0 keeps the clip's rate. Needs the video input."}),
        }}

    RETURN_TYPES = ("FANTASYPORTRAIT_TRACKS", "IMAGE", "IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("tracks", "aligned_faces", "preview", "fps", "audio")
    OUTPUT_TOOLTIPS = ("Face tracks and aligned faces, for the Expression Extractor.", "The 224x224 faces the motion "
                       "encoder sees, person by person.", "The used frames (long side 512) with boxes, ids and "
                       "landmarks.", "Frame rate of the used frames (from the video, after any retiming; 25 for "
                       "images).", "The driving video's audio from the first used frame on (none for images): "
                       "connect it to Create Video.")
    FUNCTION = "track"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Detects and tracks every face through the used frames of the driving clip with stable ids, fills "
                   "frames where a person was missed (reported in the log), and shows boxes, ids and landmarks.")

    def track(self, face_models, min_face, persons, video=None, images=None, start_frame=0, length=81, fps=0.0):
        from ..fantasyportrait_core.video import DrivingFrames, read_audio

        require_finite(fps=fps)
        check_clip_length(length, "length")
        audio, rate = None, DEFAULT_FPS
        if video is not None:
            source = _video_source(video)
            if source is None:  # a VIDEO without a stream source: its frames are all we can get
                components = video.get_components()
                images, rate, audio = components.images, float(components.frame_rate), components.audio
            else:
                frames = DrivingFrames(source, start_frame, length, fps or None, name="the driving video")
                rate = frames.fps
                audio = read_audio(source, frames.start_seconds, frames.duration, "the driving video")
        elif images is None:
            raise FantasyPortraitError("Connect the driving clip to the Face Tracker: video (from Load Video) or "
                                       "images.")
        if images is not None:
            if fps and video is None:
                log.warning("FantasyPortrait: fps only retimes the video input; the images are used as they are")
            if start_frame >= len(images):
                raise FantasyPortraitError(f"start_frame {start_frame} is past the end of the driving images "
                                           f"({len(images)} frames): lower start_frame.")
            frames = frames_to_uint8(images[start_frame:start_frame + length] if length else images[start_frame:])
        check_driving_frames(len(frames), "The driving video")
        tracks = track_faces(frames, face_models.detector, face_models.landmarker, min_face=min_face,
                             progress=Progress(2 * len(frames)), source="the driving frames")
        tracks = keep_persons(tracks, persons)
        for note in tracks.notes:
            log.warning("FantasyPortrait: %s", note)
        # the aligned faces are all the next node needs: keep them (224x224 per face), not the full frames
        crops = aligned_crops(frames, tracks)
        preview = draw_preview(frames, tracks, max_side=PREVIEW_SIDE)
        return ({"tracks": tracks, "crops": crops, "fps": rate}, _to_image(crops.reshape(-1, 224, 224, 3)),
                _to_image(preview), rate, audio)


class FantasyPortraitExpressionExtractor:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_models": ("FANTASYPORTRAIT_FACE_MODELS", {"tooltip": "From FantasyPortrait Face Model Loader."}),
            "tracks": ("FANTASYPORTRAIT_TRACKS", {"tooltip": "From FantasyPortrait Face Tracker."}),
        }, "optional": {
            "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "tooltip": "Frame rate of the driving "
                              "frames, kept with the features so the output video can use it. 0 = the tracker's "
                              "(the video's rate; 25 for images)."}),
        }}

    RETURN_TYPES = ("FANTASYPORTRAIT_FEATURES",)
    RETURN_NAMES = ("features",)
    FUNCTION = "extract"
    CATEGORY = CATEGORY
    DESCRIPTION = "Runs the PD-FGC motion encoder on every aligned face: per person, 554 numbers per frame."

    def extract(self, face_models, tracks, fps=0.0):
        from .wan_patch import load_managed, managed_module

        require_finite(fps=fps)
        t, crops = tracks["tracks"], tracks["crops"].reshape(-1, 224, 224, 3)
        device = getattr(face_models, "torch_device", torch.device("cpu"))
        encoder, device = load_managed(managed_module(face_models, "_comfy_motion", face_models.motion_encoder, device))
        feats = encode_crops(encoder, crops, device=device, progress=Progress(len(crops)))
        rate = fps or tracks.get("fps") or DEFAULT_FPS
        return ({"features": feats.reshape(t.num_persons, t.num_frames, -1), "fps": rate, "tracks": t},)


class FantasyPortraitEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "adapter": ("FANTASYPORTRAIT_MODEL", {"tooltip": "From FantasyPortrait Model Loader."}),
            "features": ("FANTASYPORTRAIT_FEATURES", {"tooltip": "From FantasyPortrait Expression Extractor."}),
            "person": ("INT", {"default": -1, "min": -1, "max": 15, "tooltip": "Which tracked person drives the "
                               "portrait: -1 = the largest face (the released rule; switches and ties are logged), "
                               "or a person number (0 = leftmost)."}),
            "num_frames": ("INT", {"default": 0, "min": 0, "max": 4097, "step": 1, "tooltip": "Output length in "
                                   "frames (4k+1, as in WanImageToVideo's length). 0 = from the driving clip."}),
            "frame_fit": (["trim", "pad"], {"default": "trim", "tooltip": "When the clip is not 4k+1 frames long (or "
                                            "differs from num_frames): trim it (released behaviour) or pad by "
                                            "repeating the last frame."}),
            "proj_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Strength of "
                                     "the 4 projection tokens (head pose, eyes, emotion, mouth)."}),
            "mouth_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Strength "
                                      "of the 16 lip tokens."}),
            "emo_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Strength of "
                                    "the 4 emotion tokens."}),
        }, "optional": {
            "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.01, "tooltip": "Resample the driving "
                              "motion to this frame rate (nearest frame) before fitting the length, e.g. to give "
                              "several drivers one rate (the released code uses 25). 0 keeps the clip's rate."}),
        }}

    RETURN_TYPES = ("FANTASYPORTRAIT_EMBEDS", "INT", "FLOAT")
    RETURN_NAMES = ("portrait_embeds", "num_frames", "fps")
    OUTPUT_TOOLTIPS = ("Tokens and windows for the patched Wan model.", "Output length in frames (for "
                       "WanImageToVideo's length).", "Frame rate of the driving motion after any resampling: "
                       "connect it to Create Video's fps so the video plays at the motion's speed.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Turns expression features into per-latent-frame token windows for the patched Wan model."

    def encode(self, adapter, features, person, num_frames, frame_fit, proj_scale, mouth_scale, emo_scale, fps=0.0):
        from .wan_patch import load_managed, managed_module
        from ..fantasyportrait_core.video import resample_indices

        require_finite(proj_scale=proj_scale, mouth_scale=mouth_scale, emo_scale=emo_scale, fps=fps)
        feats = features["features"]
        tracks = features.get("tracks")
        if person < 0 and tracks is None:  # features made without the tracker: only one person can be meant
            if feats.shape[0] > 1:
                raise FantasyPortraitError("These features carry no face tracks, so the largest face is unknown: set "
                                           "person to a number.")
            person = 0
        elif person < 0:
            person, notes = largest_person(tracks)
            log.info("FantasyPortrait: person %d (the largest face) drives the portrait", person)
            for note in notes:
                log.warning("FantasyPortrait: %s", note)
        if person >= feats.shape[0]:
            raise FantasyPortraitError(f"Person {person} was asked for but the driving clip has {feats.shape[0]} "
                                       f"person(s) (numbered from 0, left to right).")
        feats = feats[person:person + 1]
        boxes = tracks.boxes[person] if tracks is not None else None
        rate = features.get("fps")
        if fps and rate and abs(fps - rate) > 1e-3:
            idx = resample_indices(feats.shape[1], rate, fps)
            feats = feats[:, torch.from_numpy(idx)]
            boxes = boxes[idx] if boxes is not None else None
            log.warning("FantasyPortrait: resampled the driving motion from %g to %g fps (%d frames)", rate, fps,
                        len(idx))
            rate = fps
        feats, note = fit_frame_count(feats, frame_fit, target=num_frames or None)
        if note:
            log.warning("FantasyPortrait: %s", note)
        encoder, _ = load_managed(managed_module(adapter, "_comfy_encoder", adapter.encoder,
                                                 comfy.model_management.get_torch_device()))
        embeds = encode_features(encoder, feats, GroupScales(proj_scale, mouth_scale, emo_scale),
                                 progress=Progress(feats.shape[1]))
        embeds.tokens, embeds.windows = embeds.tokens.cpu(), embeds.windows.cpu()
        if boxes is not None:  # the driver's face boxes, for multi-portrait regions
            boxes = boxes[:embeds.num_frames]
            if len(boxes) < embeds.num_frames:
                boxes = np.concatenate([boxes, np.repeat(boxes[-1:], embeds.num_frames - len(boxes), 0)])
        return (PortraitConditioning(embeds, fps=rate, driver_boxes=boxes), embeds.num_frames,
                float(rate or DEFAULT_FPS))


def _patch(model, adapter, portrait_embeds, strength, start_percent, end_percent):
    from .wan_patch import apply_portrait
    from ..fantasyportrait_core.branch.multi import token_grid

    if not isinstance(portrait_embeds, PortraitConditioning):
        raise FantasyPortraitError("portrait_embeds must come from FantasyPortrait Encode or Multi-Portrait Combine.")
    size, mask = portrait_embeds.size, portrait_embeds.mask
    grid = token_grid(*size) if size is not None and mask is not None else None
    return apply_portrait(model, adapter, portrait_embeds.embeds.windows, strength, start_percent, end_percent,
                          mask, portrait_embeds.query_scale, grid=grid, size=size)


PATCH_INPUTS = {
    "adapter": ("FANTASYPORTRAIT_MODEL", {"tooltip": "From FantasyPortrait Model Loader."}),
    "portrait_embeds": ("FANTASYPORTRAIT_EMBEDS", {"tooltip": "From FantasyPortrait Encode (or the multi-portrait "
                                                   "node)."}),
    "portrait_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Scale of the "
                                    "adapter's cross-attention (1 = as trained; 0 = off)."}),
    "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress "
                                "at which the portrait starts to act."}),
    "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress "
                              "after which it stops."}),
}


class FantasyPortraitApply:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "Native Wan 2.1 I2V 14B model (Load Diffusion Model); "
                                                 "LoRAs may be applied before or after."}), **PATCH_INPUTS}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Adds the portrait cross-attention to every Wan block (a patched copy; your MODEL is unchanged). "
                   "Use with FantasyPortrait Guider for portrait_cfg; with a plain sampler the portrait acts in every "
                   "pass.")

    def apply(self, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent):
        return (_patch(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent),)


GUIDE_INPUTS = {
    "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Text "
                      "guidance. Released setting: 1 (then the negative prompt is not evaluated)."}),
    "portrait_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01, "tooltip":
                               "Portrait guidance (released: 4). 1 or less = none (plain CFG with the portrait in "
                               "every pass, no extra model pass)."}),
}


def _guider(model, positive, negative, cfg, portrait_cfg):
    from .wan_patch import PortraitGuider

    guider = PortraitGuider(model)
    guider.set_cfg(cfg, portrait_cfg)
    guider.set_conds(positive, negative)
    return guider


class FantasyPortraitGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "A model patched by FantasyPortrait Apply."}),
                             "positive": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
                             "negative": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}), **GUIDE_INPUTS}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY
    DESCRIPTION = "Guidance with a separate portrait scale, for SamplerCustomAdvanced."

    def get_guider(self, model, positive, negative, cfg, portrait_cfg):
        return (_guider(model, positive, negative, cfg, portrait_cfg),)


class FantasyPortraitSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Native Wan 2.1 I2V 14B model (Load Diffusion Model), LoRAs welcome."}),
            **PATCH_INPUTS,
            "positive": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
            "negative": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
            "latent_image": ("LATENT", {"tooltip": "From WanImageToVideo (its length must match the embeds)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 10000, "tooltip": "Released: 30."}),
            **GUIDE_INPUTS,
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler", "tooltip": "Sampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "simple", "tooltip": "Scheduler."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Denoise."}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = "KSampler for native Wan with the FantasyPortrait branch and portrait guidance."

    def sample(self, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent, positive, negative,
               latent_image, seed, steps, cfg, portrait_cfg, sampler_name, scheduler, denoise):
        patched = _patch(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent)
        guider = _guider(patched, positive, negative, cfg, portrait_cfg)
        latent = comfy.sample.fix_empty_latent_channels(patched, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        ksampler = comfy.samplers.KSampler(patched, steps=steps, device=patched.load_device, sampler=sampler_name,
                                           scheduler=scheduler, denoise=denoise, model_options=patched.model_options)
        callback = latent_preview.prepare_callback(patched, steps)
        samples = guider.sample(noise, latent, comfy.samplers.sampler_object(sampler_name), ksampler.sigmas,
                                denoise_mask=latent_image.get("noise_mask"), callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return (out,)


class FantasyPortraitMultiCombine:
    @classmethod
    def INPUT_TYPES(cls):
        embeds = ("FANTASYPORTRAIT_EMBEDS", {"tooltip": "One person's embeds from FantasyPortrait Encode (choose the "
                                             "person there). Drivers are numbered in input order."})
        return {"required": {
            "face_models": ("FANTASYPORTRAIT_FACE_MODELS", {"tooltip": "Finds the faces in the portrait (same "
                                                            "detector as the driving clips)."}),
            "image": ("IMAGE", {"tooltip": "The portrait with several people (the start image of WanImageToVideo)."}),
            "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 8, "tooltip": "Output width: the same "
                              "as WanImageToVideo's."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 8, "tooltip": "Output height: the same "
                               "as WanImageToVideo's."}),
            "embeds_1": embeds, "embeds_2": embeds,
            "mapping": ("STRING", {"default": "", "tooltip": "Which driver animates each face, faces left to right, "
                                   "e.g. '2,1'. Empty: driver k animates face k."}),
            "background": (["all", "none"], {"default": "all", "tooltip": "What tokens outside every face region "
                                             "attend to: all drivers (released) or none (no portrait there)."}),
            "strengths": ("STRING", {"default": "", "tooltip": "Per-person portrait strength in face order, e.g. "
                                     "'1.0,0.7' (one number applies to all). Empty: 1 for everyone."}),
        }, "optional": {"embeds_3": embeds, "embeds_4": embeds}}

    RETURN_TYPES = ("FANTASYPORTRAIT_EMBEDS", "INT", "IMAGE", "FLOAT")
    RETURN_NAMES = ("portrait_embeds", "num_frames", "regions_preview", "fps")
    OUTPUT_TOOLTIPS = ("Tokens, windows and mask of every person.", "Output length in frames.",
                       "Each person's region tinted and numbered.", "Frame rate of the first driver's motion: "
                       "connect it to Create Video's fps.")
    FUNCTION = "combine"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Several people in one portrait, each driven by their own driver: regions from the faces and the "
                   "drivers' motion, and a mask so each face only follows its own driver.")

    def combine(self, face_models, image, width, height, embeds_1, embeds_2, mapping, background, strengths,
                embeds_3=None, embeds_4=None):
        from ..fantasyportrait_core.branch.multi import (combine, draw_regions, map_boxes_to_output, parse_mapping,
                                                  parse_strengths)

        drivers = [e for e in (embeds_1, embeds_2, embeds_3, embeds_4) if e is not None]
        if any(not isinstance(d, PortraitConditioning) or d.driver_boxes is None for d in drivers):
            raise FantasyPortraitError("Every input must come from FantasyPortrait Encode (it carries the driver's "
                                       "face boxes).")
        portrait = frames_to_uint8(image[:1])[0]
        boxes = portrait_faces(portrait, face_models.detector)
        if len(boxes) != len(drivers):
            raise FantasyPortraitError(
                f"The portrait has {len(boxes)} faces but {len(drivers)} drivers are connected: connect one "
                "FantasyPortrait Encode per face.")
        faces = map_boxes_to_output(boxes, (portrait.shape[1], portrait.shape[0]), (width, height))
        out = combine([d.embeds.windows for d in drivers], [d.driver_boxes for d in drivers], faces, width,
                      height, parse_mapping(mapping, len(drivers)), background,
                      parse_strengths(strengths, len(drivers)))
        for note in out["notes"]:
            log.warning("FantasyPortrait: %s", note)
        fps = {d.fps for d in drivers if d.fps}
        if len(fps) > 1:
            log.warning("FantasyPortrait: the drivers have different frame rates (%s); the output uses one rate, so "
                        "some drivers play faster or slower. Resample the clips to one rate first.", sorted(fps))
        t_lat = out["windows"].shape[1]
        frames, per_frame = frame_count_of_latent(t_lat), drivers[0].embeds.tokens_per_frame
        tokens = torch.cat([d.embeds.tokens[:, :frames * per_frame] for d in drivers])
        embeds = PortraitEmbeds(tokens=tokens, windows=out["windows"], num_frames=frames, tokens_per_frame=per_frame)
        import comfy.utils

        resized = comfy.utils.common_upscale(image[:1].movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
        preview = draw_regions(frames_to_uint8(resized)[0], out["regions"], faces)
        result = PortraitConditioning(embeds, fps=drivers[0].fps, mask=out["mask"], query_scale=out["query_scale"],
                                      size=(width, height))
        return (result, embeds.num_frames, _to_image(preview[None]), float(drivers[0].fps or DEFAULT_FPS))


NODE_CLASS_MAPPINGS = {
    "FantasyPortraitModelLoader": FantasyPortraitModelLoader,
    "FantasyPortraitFaceModelLoader": FantasyPortraitFaceModelLoader,
    "FantasyPortraitFaceTracker": FantasyPortraitFaceTracker,
    "FantasyPortraitExpressionExtractor": FantasyPortraitExpressionExtractor,
    "FantasyPortraitEncode": FantasyPortraitEncode,
    "FantasyPortraitApply": FantasyPortraitApply,
    "FantasyPortraitGuider": FantasyPortraitGuider,
    "FantasyPortraitSampler": FantasyPortraitSampler,
    "FantasyPortraitMultiCombine": FantasyPortraitMultiCombine,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FantasyPortraitModelLoader": "FantasyPortrait Model Loader",
    "FantasyPortraitFaceModelLoader": "FantasyPortrait Face Model Loader",
    "FantasyPortraitFaceTracker": "FantasyPortrait Face Tracker",
    "FantasyPortraitExpressionExtractor": "FantasyPortrait Expression Extractor",
    "FantasyPortraitEncode": "FantasyPortrait Encode",
    "FantasyPortraitApply": "FantasyPortrait Apply (MODEL patch)",
    "FantasyPortraitGuider": "FantasyPortrait Guider",
    "FantasyPortraitSampler": "FantasyPortrait Sampler",
    "FantasyPortraitMultiCombine": "FantasyPortrait Multi-Portrait Combine",
}
