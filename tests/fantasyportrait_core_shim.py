"""Random PD-FGC weights built from the pack's module tree (used where the real pd_fpg.pth is absent)."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def motion_state(seed=0):
    from fantasyportrait_core.motion_encoder import MotionEncoder

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in MotionEncoder().state_dict().items():
        if v.dtype == torch.long:
            out[k] = v.clone()
        elif "running_var" in k:
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.05
    return out
