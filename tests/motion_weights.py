"""Random PD-FGC weights built from the pack's module tree (used where the real pd_fpg.pth is absent)."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def motion_state(seed=0, he=False):
    """Random PD-FGC weights (scale 0.05). ``he=True``: fan-in (He) scaled weights, unit norms and zero
    biases, so that every output component moves with the face (at scale 0.05 the head pose is constant)."""
    from fantasyportrait_core.motion.encoder import MotionEncoder

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in MotionEncoder().state_dict().items():
        if v.dtype == torch.long:
            out[k] = v.clone()
        elif "running_var" in k:
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif he and ("running_mean" in k or k.endswith("bias")):
            out[k] = torch.zeros(v.shape)
        elif he and v.ndim == 1:
            out[k] = torch.ones(v.shape)
        elif he:
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.05
    return out
