"""FantasyPortrait Output Size: the video size from the portrait's aspect at a Wan resolution, for
WanImageToVideo and Multi-Portrait Combine (so the two never need hand-synced widgets)."""

from __future__ import annotations

import logging

from ..fantasyportrait_core.faces.models import portrait_faces, to_uint8
from ..fantasyportrait_core.sizing import RESOLUTIONS, output_size
from .common import CATEGORY

log = logging.getLogger("FantasyPortrait")


class FantasyPortraitOutputSize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The portrait (the start image of WanImageToVideo)."}),
            "resolution": (list(RESOLUTIONS), {"default": "480p", "tooltip": "Wan resolution: the output has about "
                                               "this many pixels (480p: 480x832, 720p: 720x1280) in the portrait's "
                                               "aspect ratio; use the 720p model for 720p."}),
        }, "optional": {
            "face_models": ("FANTASYPORTRAIT_FACE_MODELS", {"tooltip": "Optional: check that the portrait has a face "
                                                           "before anything is sampled (clear error if not)."}),
        }}

    RETURN_TYPES = ("INT", "INT")
    RETURN_NAMES = ("width", "height")
    OUTPUT_TOOLTIPS = ("Output width (multiple of 16): connect to WanImageToVideo and Multi-Portrait Combine.",
                       "Output height (multiple of 16): connect to WanImageToVideo and Multi-Portrait Combine.")
    FUNCTION = "size"
    CATEGORY = f"{CATEGORY}/embeds"
    DESCRIPTION = ("Output size as Wan 2.1 I2V (and the released FantasyPortrait) computes it: the portrait's aspect "
                   "ratio at the chosen resolution's area, each side a multiple of 16, so nothing is cropped away.")

    def size(self, image, resolution, face_models=None):
        if face_models is not None:
            boxes = portrait_faces(to_uint8(image[0, ..., :3].cpu().numpy()), face_models.detector)
            log.info("FantasyPortrait: %d face(s) in the portrait", len(boxes))
        return output_size(int(image.shape[2]), int(image.shape[1]), resolution)


NODE_CLASS_MAPPINGS = {"FantasyPortraitOutputSize": FantasyPortraitOutputSize}
NODE_DISPLAY_NAME_MAPPINGS = {"FantasyPortraitOutputSize": "FantasyPortrait Output Size"}
