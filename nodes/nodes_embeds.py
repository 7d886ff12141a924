"""FantasyPortrait embeds: expression features -> tokens and windows (Encode), and several people in one
portrait (Multi-Portrait Combine)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..fantasyportrait_core.tokens.adapter import GroupScales
from ..fantasyportrait_core.tokens.encoding import encode_features
from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.motion.extraction import frames_to_uint8
from ..fantasyportrait_core.branch.embeds import PortraitEmbeds
from ..fantasyportrait_core.faces.detector import portrait_faces
from ..fantasyportrait_core.tokens.driver import driver_motion
from .common import (DEFAULT_FPS, AdapterIO, EmbedsIO, FaceModelsIO, FeaturesIO, Progress, check_length_widget,
                     log, node_schema, output, to_image)


SCALE = dict(default=1.0, min=0.0, max=10.0, step=0.01)
NUM_FRAMES_MAX = 4097


class FantasyPortraitEncode(io.ComfyNode):
    """Turns expression features into per-latent-frame token windows for the patched Wan model."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Encode", "embeds", inputs=[
            AdapterIO.Input("adapter", tooltip="From FantasyPortrait Model Loader."),
            FeaturesIO.Input("features", tooltip="From FantasyPortrait Expression Extractor."),
            io.Int.Input("person", default=-1, min=-1, max=15, tooltip="Which tracked person drives the portrait: "
                         "-1 = the largest face (the released rule; switches and ties are logged), or a person "
                         "number (0 = leftmost)."),
            io.Int.Input("num_frames", default=0, min=0, max=NUM_FRAMES_MAX, step=1, tooltip="Output length in "
                         "frames (4k+1, as in WanImageToVideo's length). 0 = from the driving clip."),
            io.Combo.Input("frame_fit", options=["trim", "pad"], default="trim", tooltip="When the clip is not "
                           "4k+1 frames long (or differs from num_frames): trim it (released behaviour) or pad by "
                           "repeating the last frame."),
            io.Float.Input("proj_scale", **SCALE, tooltip="Strength of the 4 projection tokens (head pose, eyes, "
                           "emotion, mouth)."),
            io.Float.Input("mouth_scale", **SCALE, tooltip="Strength of the 16 lip tokens."),
            io.Float.Input("emo_scale", **SCALE, tooltip="Strength of the 4 emotion tokens."),
            io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=0.01, optional=True, tooltip="Resample "
                           "the driving motion to this frame rate (nearest frame) before fitting the length, e.g. "
                           "to give several drivers one rate (the released code uses 25). 0 keeps the clip's "
                           "rate."),
        ], outputs=[
            output(EmbedsIO, "portrait_embeds", "Tokens and windows for the patched Wan model."),
            output(io.Int, "num_frames", "Output length in frames (for WanImageToVideo's length)."),
            output(io.Float, "fps", "Frame rate of the driving motion after any resampling: connect it to Create "
                                    "Video's fps so the video plays at the motion's speed."),
        ])

    @classmethod
    def execute(cls, adapter, features, person, num_frames, frame_fit, proj_scale, mouth_scale, emo_scale,
                fps=0.0) -> io.NodeOutput:
        from .managed import load_managed, managed_module

        require_finite(proj_scale=proj_scale, mouth_scale=mouth_scale, emo_scale=emo_scale, fps=fps)
        driver = driver_motion(features.features, features.tracks, features.fps, person, fps, num_frames, frame_fit)
        if person < 0:
            log.info("FantasyPortrait: person %d (the largest face) drives the portrait", driver.person)
        for note in driver.notes:
            log.warning("FantasyPortrait: %s", note)
        encoder, _ = load_managed(managed_module(adapter, "encoder", lambda: adapter.encoder,
                                                 comfy.model_management.get_torch_device()))
        expression = encode_features(encoder, driver.features, GroupScales(proj_scale, mouth_scale, emo_scale),
                                     progress=Progress(driver.features.shape[1]))
        expression.tokens, expression.windows = expression.tokens.cpu(), expression.windows.cpu()
        return io.NodeOutput(PortraitEmbeds(expression, fps=driver.fps, driver_boxes=driver.boxes),
                             expression.num_frames, float(driver.fps or DEFAULT_FPS))

    @classmethod
    def validate_inputs(cls, num_frames=0):
        return check_length_widget(num_frames, "num_frames", NUM_FRAMES_MAX)


MORE_DRIVERS = 12  # drivers 5..16, on hosts with io.Autogrow


def more_drivers_inputs(embeds) -> list:
    """Drivers after the four fixed inputs, on hosts whose V3 API has ``io.Autogrow`` (newer than 0.3.75; read in
    Comfy-Org/ComfyUI 58a8a96c ``comfy_api/latest/_io.py``): one growing group ``more_embeds`` whose sockets are
    named embeds_5, embeds_6, ... (a new one appears when the last is connected). The fixed embeds_1..embeds_4
    stay on every host, so saved workflows keep their links; older hosts get just those."""
    autogrow = getattr(io, "Autogrow", None)
    if autogrow is None:
        return []
    names = [f"embeds_{i}" for i in range(5, 5 + MORE_DRIVERS)]
    return [autogrow.Input("more_embeds", optional=True, tooltip="Drivers 5 and on: connect one, and the next socket "
                           "appears.", template=autogrow.TemplateNames(input=embeds("embeds", optional=True),
                                                                       names=names, min=0))]


def driver_list(fixed, more: dict | None) -> list:
    """The drivers in input order: the connected fixed inputs, then the grown ones by their number."""
    grown = [more[name] for name in sorted(more or {}, key=lambda n: int(n.rsplit("_", 1)[-1]))]
    return [e for e in (*fixed, *grown) if e is not None]


class FantasyPortraitMultiCombine(io.ComfyNode):
    """Several people in one portrait, each driven by their own driver: regions from the faces and the drivers'
    motion, and a mask so each face only follows its own driver."""

    @classmethod
    def define_schema(cls):
        def embeds(name, optional=False):
            return EmbedsIO.Input(name, optional=optional, tooltip="One person's embeds from FantasyPortrait Encode "
                                  "(choose the person there). Drivers are numbered in input order.")

        return node_schema(cls, "Multi-Portrait Combine", "embeds", inputs=[
            FaceModelsIO.Input("face_models", tooltip="Finds the faces in the portrait (same detector as the "
                               "driving clips)."),
            io.Image.Input("image", tooltip="The portrait with several people (the start image of "
                           "WanImageToVideo)."),
            io.Int.Input("width", default=832, min=16, max=4096, step=8, tooltip="Output width: the same as "
                         "WanImageToVideo's."),
            io.Int.Input("height", default=480, min=16, max=4096, step=8, tooltip="Output height: the same as "
                         "WanImageToVideo's."),
            embeds("embeds_1"), embeds("embeds_2"),
            io.String.Input("mapping", default="", tooltip="Which driver animates each face, faces left to right, "
                            "e.g. '2,1'. Empty: driver k animates face k."),
            io.Combo.Input("background", options=["all", "none"], default="all", tooltip="What tokens outside "
                           "every face region attend to: all drivers (released) or none (no portrait there)."),
            io.String.Input("strengths", default="", tooltip="Per-person portrait strength in face order, e.g. "
                            "'1.0,0.7' (one number applies to all). Empty: 1 for everyone."),
            embeds("embeds_3", optional=True), embeds("embeds_4", optional=True),
            *more_drivers_inputs(embeds),
        ], outputs=[
            output(EmbedsIO, "portrait_embeds", "Tokens, windows and mask of every person."),
            output(io.Int, "num_frames", "Output length in frames."),
            output(io.Image, "regions_preview", "Each person's region tinted and numbered."),
            output(io.Float, "fps", "Frame rate of the first driver's motion: connect it to Create Video's fps."),
        ])

    @classmethod
    def execute(cls, face_models, image, width, height, embeds_1, embeds_2, mapping, background, strengths,
                embeds_3=None, embeds_4=None, more_embeds=None) -> io.NodeOutput:
        from ..fantasyportrait_core.branch.multi import (combine, draw_regions, map_boxes_to_output, parse_mapping,
                                                  parse_strengths)

        drivers = driver_list((embeds_1, embeds_2, embeds_3, embeds_4), more_embeds)
        if any(not isinstance(d, PortraitEmbeds) or d.driver_boxes is None for d in drivers):
            raise FantasyPortraitError("Every input must come from FantasyPortrait Encode (it carries the driver's "
                                       "face boxes).")
        portrait = frames_to_uint8(image[:1])[0]
        boxes = portrait_faces(portrait, face_models.detector)  # combine() refuses a count that differs
        faces = map_boxes_to_output(boxes, (portrait.shape[1], portrait.shape[0]), (width, height))
        order = parse_mapping(mapping, len(drivers))  # face i is driven by drivers[order[i]]
        out = combine([d.expression for d in drivers], [d.driver_boxes for d in drivers], faces, width, height,
                      order, background, parse_strengths(strengths, len(drivers)))
        for note in out.notes:
            log.warning("FantasyPortrait: %s", note)
        fps = {d.fps for d in drivers if d.fps}
        if len(fps) > 1:
            log.warning("FantasyPortrait: the drivers have different frame rates (%s); the output uses one rate, so "
                        "some drivers play faster or slower. Resample the clips to one rate first.", sorted(fps))
        resized = comfy.utils.common_upscale(image[:1].movedim(-1, 1), width, height, "bilinear", "center")
        resized = resized.movedim(1, -1)
        preview = draw_regions(frames_to_uint8(resized)[0], out.regions, faces)
        result = PortraitEmbeds(out.expression, fps=drivers[0].fps, mask=out.mask, query_scale=out.query_scale,
                                size=(width, height))
        return io.NodeOutput(result, out.expression.num_frames, to_image(preview[None]),
                             float(drivers[0].fps or DEFAULT_FPS))


NODES = [FantasyPortraitEncode, FantasyPortraitMultiCombine]
