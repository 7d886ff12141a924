"""FantasyPortrait Output Size: the video size from the portrait's aspect at a Wan resolution, for
WanImageToVideo and Multi-Portrait Combine (so the two never need hand-synced widgets)."""

from __future__ import annotations

from comfy_api.latest import io

from ..fantasyportrait_core.faces.detector import portrait_faces
from ..fantasyportrait_core.motion.extraction import frames_to_uint8
from ..fantasyportrait_core.sizing import RESOLUTIONS, output_size
from .common import FaceModelsIO, log, node_schema, output


class FantasyPortraitOutputSize(io.ComfyNode):
    """Output size as Wan 2.1 I2V (and the released FantasyPortrait) computes it: the portrait's aspect ratio at
    the chosen resolution's area, each side a multiple of 16, so nothing is cropped away."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Output Size", "embeds", inputs=[
            io.Image.Input("image", tooltip="The portrait (the start image of WanImageToVideo)."),
            io.Combo.Input("resolution", options=list(RESOLUTIONS), default="480p", tooltip="Wan resolution: the "
                           "output has about this many pixels (480p: 480x832, 720p: 720x1280) in the portrait's "
                           "aspect ratio; use the 720p model for 720p."),
            FaceModelsIO.Input("face_models", optional=True, tooltip="Optional: check that the portrait has a face "
                               "before anything is sampled (clear error if not)."),
        ], outputs=[
            output(io.Int, "width", "Output width (multiple of 16): connect to WanImageToVideo and Multi-Portrait "
                                    "Combine."),
            output(io.Int, "height", "Output height (multiple of 16): connect to WanImageToVideo and "
                                     "Multi-Portrait Combine."),
        ])

    @classmethod
    def execute(cls, image, resolution, face_models=None) -> io.NodeOutput:
        if face_models is not None:
            boxes = portrait_faces(frames_to_uint8(image[:1])[0], face_models.detector)
            log.info("FantasyPortrait: %d face(s) in the portrait", len(boxes))
        return io.NodeOutput(*output_size(int(image.shape[2]), int(image.shape[1]), resolution))


NODES = [FantasyPortraitOutputSize]
