"""FantasyPortrait sampling: the MODEL patch + GUIDER pair for SamplerCustomAdvanced, and the all-in-one Sampler."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..fantasyportrait_core.errors import FantasyPortraitError
from ..fantasyportrait_core.branch.conditioning import PortraitConditioning
from .common import CATEGORY


def _patch(model, adapter, portrait_embeds, strength, start_percent, end_percent):
    from .wan_patch import apply_portrait
    from ..fantasyportrait_core.branch.multi import token_grid

    if not isinstance(portrait_embeds, PortraitConditioning):
        raise FantasyPortraitError("portrait_embeds must come from FantasyPortrait Encode or Multi-Portrait Combine.")
    size, mask = portrait_embeds.size, portrait_embeds.mask
    grid = token_grid(*size) if size is not None and mask is not None else None
    return apply_portrait(model, adapter, portrait_embeds.embeds.windows, strength, start_percent, end_percent,
                          mask, portrait_embeds.query_scale, grid=grid, size=size)


PATCH_INPUTS = {
    "adapter": ("FANTASYPORTRAIT_MODEL", {"tooltip": "From FantasyPortrait Model Loader."}),
    "portrait_embeds": ("FANTASYPORTRAIT_EMBEDS", {"tooltip": "From FantasyPortrait Encode (or the multi-portrait "
                                                   "node)."}),
    "portrait_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Scale of the "
                                    "adapter's cross-attention (1 = as trained; 0 = off)."}),
    "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress "
                                "at which the portrait starts to act."}),
    "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress "
                              "after which it stops."}),
}


class FantasyPortraitApply:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "Native Wan 2.1 I2V 14B model (Load Diffusion Model); "
                                                 "LoRAs may be applied before or after."}), **PATCH_INPUTS}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = ("Adds the portrait cross-attention to every Wan block (a patched copy; your MODEL is unchanged). "
                   "Use with FantasyPortrait Guider for portrait_cfg; with a plain sampler the portrait acts in every "
                   "pass.")

    def apply(self, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent):
        return (_patch(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent),)


GUIDE_INPUTS = {
    "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Text "
                      "guidance. Released setting: 1 (then the negative prompt is not evaluated)."}),
    "portrait_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01, "tooltip":
                               "Portrait guidance (released: 4). 1 or less = none (plain CFG with the portrait in "
                               "every pass, no extra model pass)."}),
}


def _guider(model, positive, negative, cfg, portrait_cfg):
    from .wan_patch import PortraitGuider

    guider = PortraitGuider(model)
    guider.set_cfg(cfg, portrait_cfg)
    guider.set_conds(positive, negative)
    return guider


class FantasyPortraitGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "A model patched by FantasyPortrait Apply."}),
                             "positive": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
                             "negative": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}), **GUIDE_INPUTS}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = "Guidance with a separate portrait scale, for SamplerCustomAdvanced."

    def get_guider(self, model, positive, negative, cfg, portrait_cfg):
        return (_guider(model, positive, negative, cfg, portrait_cfg),)


class FantasyPortraitSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Native Wan 2.1 I2V 14B model (Load Diffusion Model), LoRAs welcome."}),
            **PATCH_INPUTS,
            "positive": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
            "negative": ("CONDITIONING", {"tooltip": "From WanImageToVideo."}),
            "latent_image": ("LATENT", {"tooltip": "From WanImageToVideo (its length must match the embeds)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 10000, "tooltip": "Released: 30."}),
            **GUIDE_INPUTS,
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler", "tooltip": "Sampler."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "simple", "tooltip": "Scheduler."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Denoise."}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = "KSampler for native Wan with the FantasyPortrait branch and portrait guidance."

    def sample(self, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent, positive, negative,
               latent_image, seed, steps, cfg, portrait_cfg, sampler_name, scheduler, denoise):
        patched = _patch(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent)
        guider = _guider(patched, positive, negative, cfg, portrait_cfg)
        latent = comfy.sample.fix_empty_latent_channels(patched, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        ksampler = comfy.samplers.KSampler(patched, steps=steps, device=patched.load_device, sampler=sampler_name,
                                           scheduler=scheduler, denoise=denoise, model_options=patched.model_options)
        callback = latent_preview.prepare_callback(patched, steps)
        samples = guider.sample(noise, latent, comfy.samplers.sampler_object(sampler_name), ksampler.sigmas,
                                denoise_mask=latent_image.get("noise_mask"), callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return (out,)


NODE_CLASS_MAPPINGS = {
    "FantasyPortraitApply": FantasyPortraitApply,
    "FantasyPortraitGuider": FantasyPortraitGuider,
    "FantasyPortraitSampler": FantasyPortraitSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FantasyPortraitApply": "FantasyPortrait Apply (MODEL patch)",
    "FantasyPortraitGuider": "FantasyPortrait Guider",
    "FantasyPortraitSampler": "FantasyPortrait Sampler",
}
