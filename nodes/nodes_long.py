"""FantasyPortrait long video: a driving clip of any length animated chunk after chunk into one VIDEO."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import InputImpl, io

from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.branch.embeds import PortraitEmbeds
from ..fantasyportrait_core.longvideo.plan import DEFAULT_CHUNK, DEFAULT_OVERLAP, plan_chunks
from .common import DEFAULT_FPS, check_length_widget, node_schema, output
from .nodes_sampling import guide_inputs, patch_inputs

CHUNK_MAX = 257
COLOUR = {"portrait": True, "off": False}


class FantasyPortraitLongVideo(io.ComfyNode):
    """Animates the whole driving clip, however long: Wan samples it in chunks (81 frames by default), each
    starting from the last frames of the chunk before and re-anchored on the portrait (its CLIP-vision embedding),
    each driven by exactly the driver frames it shows. The colour is kept on the portrait's, frames go to a video
    file as they are made, and finished chunks are kept on disk: queue the same prompt again after a cancel, a crash
    or a restart and it resumes at the first unfinished chunk."""

    @classmethod
    def define_schema(cls):
        schema = node_schema(cls, "Long Video", "sampling", inputs=[
            io.Model.Input("model", tooltip="Native Wan 2.1 I2V 14B model (Load Diffusion Model), LoRAs welcome."),
            *patch_inputs(),
            io.Conditioning.Input("positive", tooltip="The text prompt (CLIP Text Encode): this node adds the image "
                                  "conditioning of every chunk itself, as WanImageToVideo does."),
            io.Conditioning.Input("negative", tooltip="The negative text prompt (CLIP Text Encode)."),
            io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
            io.Image.Input("start_image", tooltip="The portrait (resized and centre-cropped to width x height, as "
                           "WanImageToVideo does)."),
            io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Output width (FantasyPortrait "
                         "Output Size)."),
            io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Output height."),
            io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                         tooltip="Seed of the first chunk; chunk k uses seed + k."),
            io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Sampling steps of every chunk (released: "
                         "30)."),
            *guide_inputs(),
            io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                           tooltip="The sampling algorithm (released: euler)."),
            io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                           tooltip="How the noise levels are spaced over the steps."),
            io.Int.Input("chunk_length", default=DEFAULT_CHUNK, min=5, max=CHUNK_MAX, step=4, tooltip="Frames Wan "
                         "samples at once (4k+1; 81 as Wan 2.1 was trained). Longer chunks cost more memory, "
                         "quadratically in time."),
            io.Int.Input("overlap", default=DEFAULT_OVERLAP, min=1, max=CHUNK_MAX - 4, step=4, tooltip="Frames each "
                         "chunk after the first starts from: the last frames of the chunk before (4k+1: 1, 5, 9, "
                         "13...). More gives smoother joins and costs that many extra frames per chunk; they appear "
                         "once in the output."),
            io.Combo.Input("colour_match", options=list(COLOUR), default="portrait", tooltip="portrait: keep every "
                           "frame's colour and brightness on the portrait's (smoothed over time), so chunks do not "
                           "drift; off: as sampled."),
            io.Float.Input("fps", default=DEFAULT_FPS, min=1.0, max=120.0, step=0.01, tooltip="Frame rate of the "
                           "video: connect FantasyPortrait Encode's fps (the driving motion's)."),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True, tooltip="CLIP Vision Encode of the "
                                      "portrait: given to every chunk, so the identity is re-anchored each time."),
            io.Audio.Input("audio", optional=True, tooltip="The driving clip's audio (Face Tracker's), cut to the "
                           "video."),
        ], outputs=[
            output(io.Video, "video", "The whole animation as a video file (with the audio): for Save Video."),
            output(io.Int, "num_frames", "Frames in the video."),
        ])
        schema.hidden = [io.Hidden.unique_id]
        return schema

    @classmethod
    def validate_inputs(cls, chunk_length=DEFAULT_CHUNK, overlap=DEFAULT_OVERLAP):
        checked = check_length_widget(chunk_length, "chunk_length", CHUNK_MAX)
        if checked is not True or chunk_length is None or overlap is None:
            return checked
        try:
            plan_chunks(chunk_length * 2 - 1, chunk_length, overlap)  # the widgets alone, on a clip of two chunks
        except FantasyPortraitError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent, positive,
                negative, vae, start_image, width, height, seed, steps, cfg, portrait_cfg, sampler_name, scheduler,
                chunk_length, overlap, colour_match, fps, clip_vision_output=None, audio=None) -> io.NodeOutput:
        from .long_run import LongSettings, run_long

        require_finite(cfg=cfg, portrait_cfg=portrait_cfg, fps=fps, portrait_strength=portrait_strength)
        if not isinstance(portrait_embeds, PortraitEmbeds):
            raise FantasyPortraitError("portrait_embeds must come from FantasyPortrait Encode or Multi-Portrait "
                                       "Combine.")
        if colour_match not in COLOUR:
            raise FantasyPortraitError(f"colour_match must be one of {', '.join(COLOUR)}, not {colour_match!r}.")
        settings = LongSettings(float(portrait_strength), float(start_percent), float(end_percent), width, height,
                                seed, steps, float(cfg), float(portrait_cfg), sampler_name, scheduler, chunk_length,
                                overlap, COLOUR[colour_match], float(fps))
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        path, frames = run_long(model, adapter, portrait_embeds, positive, negative, vae, start_image,
                                clip_vision_output, audio, settings, node_id)
        return io.NodeOutput(InputImpl.VideoFromFile(path), frames)


NODES = [FantasyPortraitLongVideo]
