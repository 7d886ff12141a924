"""What the Wan branch is given: one typed object, the pack's FANTASYPORTRAIT_EMBEDS socket (the nodes' input and
output ``portrait_embeds``) between nodes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..tokens.encoding import ExpressionTokens
from ..tokens.windows import latent_frame_count


@dataclass
class PortraitEmbeds:
    """Expression tokens and windows of one or several persons, and how the branch uses them.

    From FantasyPortrait Encode (one driver): ``driver_boxes`` holds the driver's face box per frame,
    which Multi-Portrait Combine needs for the regions; ``mask`` is None (every token attends to the
    driver). From Multi-Portrait Combine: the persons' windows side by side, the attention ``mask``
    (``[T_lat, L, W]`` or ``[L, W]``, True = attend), per-token ``query_scale`` (per-person
    strengths) and the output ``size`` (width, height) the mask was built for.
    """

    expression: ExpressionTokens
    fps: float | None = None
    driver_boxes: np.ndarray | None = None
    mask: torch.Tensor | None = None
    query_scale: torch.Tensor | None = None
    size: tuple[int, int] | None = None

    def frames(self, start: int, count: int) -> "PortraitEmbeds":
        """The embeds of driver frames ``[start, start + count)`` alone, as one pass over just those frames gets
        them: one chunk of a long video. The mask and strengths are the same for every frame."""
        mask = self.mask
        if mask is not None and mask.ndim == 3:  # [T_lat, L, W]: one frame's, repeated
            mask = mask[:latent_frame_count(count)]
        boxes = self.driver_boxes[start:start + count] if self.driver_boxes is not None else None
        return replace(self, expression=self.expression.frames(start, count), driver_boxes=boxes, mask=mask)
