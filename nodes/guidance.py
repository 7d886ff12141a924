"""Portrait guidance (the released rule, with a separate portrait scale) through ComfyUI's CFG machinery, so
other guidance patches on the MODEL (RescaleCFG, CFGZeroStar, APG, pre/post-CFG functions) still act.
Imported only inside ComfyUI."""

from __future__ import annotations

import math

import torch

import comfy.conds
import comfy.samplers

from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from .wan_patch import PORTRAIT_ON_COND, portrait_state


def with_portrait(conditioning, on: bool):
    """Conditioning whose model calls carry the portrait (or not): a per-row on/off model cond."""
    out = []
    for emb, opts in conditioning:
        opts = opts.copy()
        model_conds = dict(opts.get("model_conds", {}))
        model_conds[PORTRAIT_ON_COND] = comfy.conds.CONDRegular(torch.tensor([1.0 if on else 0.0]))
        opts["model_conds"] = model_conds
        out.append([emb, opts])
    return out


class PortraitGuider(comfy.samplers.CFGGuider):
    """Released guidance with a separate portrait scale, through ComfyUI's CFG functions.

    * ``portrait_cfg <= 1``: ordinary CFG, the portrait in both passes (released: portrait guidance
      only when its scale is > 1);
    * ``cfg == 1``: ``no_port + portrait_cfg * (pos - no_port)`` (2 passes; CFG with ``no_port`` as
      the unconditional prediction);
    * otherwise: ``neg + cfg * (no_port - neg) + portrait_cfg * (pos - no_port)`` (3 passes, batched;
      the text CFG part goes through ComfyUI's CFG functions, as core's DualCFGGuider does),
    with the portrait off in the negative and ``no_port`` passes. Set-up order does not matter.
    """

    def __init__(self, model_patcher):
        if portrait_state(model_patcher) is None:
            raise FantasyPortraitError(
                "This MODEL carries no portrait: connect the output of FantasyPortrait Apply (MODEL patch).")
        super().__init__(model_patcher)
        self.portrait_cfg = 1.0
        self._pos = self._neg = None

    def set_cfg(self, cfg, portrait_cfg=None):
        require_finite(cfg=cfg, portrait_cfg=portrait_cfg)
        self.cfg = cfg
        if portrait_cfg is not None:
            self.portrait_cfg = portrait_cfg

    def set_conds(self, positive, negative):
        self._pos, self._neg = positive, negative

    @property
    def portrait_guidance(self) -> bool:
        return self.portrait_cfg > 1 and not math.isclose(self.portrait_cfg, 1.0)

    def sample(self, *args, **kwargs):
        if self._pos is None:
            raise FantasyPortraitError("FantasyPortrait Guider has no conditioning (positive/negative).")
        guided = self.portrait_guidance
        self.original_conds = {}
        self.inner_set_conds({
            "positive": with_portrait(self._pos, True),
            "negative": with_portrait(self._neg, not guided),
            **({"no_portrait": with_portrait(self._pos, False)} if guided else {}),
        })
        return super().sample(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = model_options if model_options is not None else {}
        pos, neg = self.conds.get("positive"), self.conds.get("negative")
        if not self.portrait_guidance:
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, neg, pos, self.cfg,
                                                    model_options=model_options, seed=seed)
        nop = self.conds.get("no_portrait")
        if math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False):
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, nop, pos, self.portrait_cfg,
                                                    model_options=model_options, seed=seed)
        conds = [nop, neg, pos]
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": timestep, "input": x,
                      "sigma": timestep, "model": self.inner_model, "model_options": model_options})
        text = comfy.samplers.cfg_function(self.inner_model, out[0], out[1], self.cfg, x, timestep,
                                           model_options=model_options, cond=nop, uncond=neg)
        return text + self.portrait_cfg * (out[2] - out[0])
