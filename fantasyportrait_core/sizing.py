"""Output size of the video: the portrait's aspect at a Wan resolution.

Wan 2.1 I2V (and so the released FantasyPortrait inference) sizes its output from the input image:
keep the image's aspect ratio, make the area about the resolution's (480p: 480 x 832, 720p: 720 x
1280), and round each side down to a multiple of 16 (VAE stride 8 x patch 2).
"""

from __future__ import annotations

import math

from .errors import FantasyPortraitError

RESOLUTIONS = {"480p": 480 * 832, "720p": 720 * 1280}
MULTIPLE = 16


def output_size(image_width: int, image_height: int, resolution: str = "480p") -> tuple[int, int]:
    """(width, height) for an ``image_width`` x ``image_height`` portrait at ``resolution``."""
    if resolution not in RESOLUTIONS:
        raise FantasyPortraitError(f"Resolution {resolution!r} is not one of {', '.join(RESOLUTIONS)}.")
    if image_width < 1 or image_height < 1:
        raise FantasyPortraitError(f"The portrait image is {image_width}x{image_height}; it needs pixels.")
    area, aspect = RESOLUTIONS[resolution], image_height / image_width
    if not 1 / 8 <= aspect <= 8:
        raise FantasyPortraitError(
            f"The portrait image is {image_width}x{image_height}, too elongated for a Wan video: crop it to an "
            "aspect ratio between 1:8 and 8:1.")
    # the small epsilon keeps an image that already has a Wan size at that size (832x480 stays 832x480;
    # without it float rounding gives 479.99999 -> 464)
    height = int((math.sqrt(area * aspect) + 1e-6) // MULTIPLE) * MULTIPLE
    width = int((math.sqrt(area / aspect) + 1e-6) // MULTIPLE) * MULTIPLE
    return width, height
