"""Layout of the per-frame implicit expression feature (PD-FGC motion encoder output).

Each frame is described by 554 numbers, in this order (as the released pipeline concatenates
them): head pose 6, eyes 6, emotion 30, mouth 512.
"""

from __future__ import annotations

import torch

from ..errors import FantasyPortraitError

HEADPOSE_DIM = 6
EYE_DIM = 6
EMO_DIM = 30
MOUTH_DIM = 512
FEATURE_DIM = HEADPOSE_DIM + EYE_DIM + EMO_DIM + MOUTH_DIM  # 554

#: name -> (start, stop) slice of the 554-wide feature vector
FEATURE_SLICES = {
    "headpose": (0, HEADPOSE_DIM),
    "eye": (HEADPOSE_DIM, HEADPOSE_DIM + EYE_DIM),
    "emo": (HEADPOSE_DIM + EYE_DIM, HEADPOSE_DIM + EYE_DIM + EMO_DIM),
    "mouth": (HEADPOSE_DIM + EYE_DIM + EMO_DIM, FEATURE_DIM),
}


def split_features(features: torch.Tensor, dims: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Split ``[..., D]`` features into their named parts.

    ``dims`` gives the width of each part in order (headpose, eye, emo, mouth); the released
    widths are used when it is omitted.
    """
    dims = dims or {name: stop - start for name, (start, stop) in FEATURE_SLICES.items()}
    total = sum(dims.values())
    if features.shape[-1] != total:
        raise FantasyPortraitError(
            f"Expression features have width {features.shape[-1]}, expected {total} "
            f"(headpose {dims['headpose']} + eye {dims['eye']} + emo {dims['emo']} + "
            f"mouth {dims['mouth']}). Were they produced by the PD-FGC motion encoder?"
        )
    out, start = {}, 0
    for name in ("headpose", "eye", "emo", "mouth"):
        out[name] = features[..., start:start + dims[name]]
        start += dims[name]
    return out
