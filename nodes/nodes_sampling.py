"""FantasyPortrait sampling: the MODEL patch + GUIDER pair for SamplerCustomAdvanced, and the all-in-one Sampler."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..fantasyportrait_core.errors import FantasyPortraitError
from ..fantasyportrait_core.branch.embeds import PortraitEmbeds
from .common import AdapterIO, EmbedsIO, node_schema, output


def portrait_model(model, adapter, portrait_embeds, strength, start_percent, end_percent):
    """``model`` with the portrait branch (what FantasyPortrait Apply returns)."""
    from .wan_patch import apply_portrait
    from ..fantasyportrait_core.branch.multi import token_grid

    if not isinstance(portrait_embeds, PortraitEmbeds):
        raise FantasyPortraitError("portrait_embeds must come from FantasyPortrait Encode or Multi-Portrait Combine.")
    size, mask = portrait_embeds.size, portrait_embeds.mask
    grid = token_grid(*size) if size is not None and mask is not None else None
    return apply_portrait(model, adapter, portrait_embeds.expression.windows, strength, start_percent, end_percent,
                          mask, portrait_embeds.query_scale, grid=grid, size=size)


def patch_inputs() -> list:
    return [
        AdapterIO.Input("adapter", tooltip="From FantasyPortrait Model Loader."),
        EmbedsIO.Input("portrait_embeds", tooltip="From FantasyPortrait Encode (or the multi-portrait node)."),
        io.Float.Input("portrait_strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="Scale of the "
                       "adapter's cross-attention (1 = as trained; 0 = off)."),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Sampling progress at which "
                       "the portrait starts to act."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Sampling progress after "
                       "which it stops."),
    ]


def guide_inputs() -> list:
    return [
        io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Text guidance. Released "
                       "setting: 1 (then the negative prompt is not evaluated)."),
        io.Float.Input("portrait_cfg", default=4.0, min=0.0, max=20.0, step=0.1, round=0.01, tooltip="Portrait "
                       "guidance (released: 4). 1 or less = none (plain CFG with the portrait in every pass, no extra "
                       "model pass)."),
    ]


def _conds() -> list:
    return [io.Conditioning.Input(name, tooltip="From WanImageToVideo.") for name in ("positive", "negative")]


class FantasyPortraitApply(io.ComfyNode):
    """Adds the portrait cross-attention to every Wan block (a patched copy; your MODEL is unchanged). Use with
    FantasyPortrait Guider for portrait_cfg; with a plain sampler the portrait acts in every pass."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Apply (MODEL patch)", "sampling", inputs=[
            io.Model.Input("model", tooltip="Native Wan 2.1 I2V 14B model (Load Diffusion Model); LoRAs may be "
                           "applied before or after."),
            *patch_inputs(),
        ], outputs=[output(io.Model, "MODEL", "The patched model: for FantasyPortrait Guider + "
                                             "SamplerCustomAdvanced, or any KSampler (plain CFG).")])

    @classmethod
    def execute(cls, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent) -> io.NodeOutput:
        return io.NodeOutput(portrait_model(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent))


def portrait_guider(model, positive, negative, cfg, portrait_cfg):
    """The portrait guider on a patched ``model`` (what FantasyPortrait Guider returns)."""
    from .guidance import PortraitGuider

    guider = PortraitGuider(model)
    guider.set_cfg(cfg, portrait_cfg)
    guider.set_conds(positive, negative)
    return guider


class FantasyPortraitGuider(io.ComfyNode):
    """Guidance with a separate portrait scale, for SamplerCustomAdvanced."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Guider", "sampling", inputs=[
            io.Model.Input("model", tooltip="A model patched by FantasyPortrait Apply."), *_conds(), *guide_inputs(),
        ], outputs=[output(io.Guider, "GUIDER", "For SamplerCustomAdvanced.")])

    @classmethod
    def execute(cls, model, positive, negative, cfg, portrait_cfg) -> io.NodeOutput:
        return io.NodeOutput(portrait_guider(model, positive, negative, cfg, portrait_cfg))


class FantasyPortraitSampler(io.ComfyNode):
    """KSampler for native Wan with the FantasyPortrait branch and portrait guidance."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Sampler", "sampling", inputs=[
            io.Model.Input("model", tooltip="Native Wan 2.1 I2V 14B model (Load Diffusion Model), LoRAs welcome."),
            *patch_inputs(), *_conds(),
            io.Latent.Input("latent_image", tooltip="From WanImageToVideo (its length must match the embeds)."),
            io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                         tooltip="The random seed of the starting noise."),
            io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Released: 30."),
            *guide_inputs(),
            io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                           tooltip="The sampling algorithm (released: euler)."),
            io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                           tooltip="How the noise levels are spaced over the steps."),
            io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="How much of the latent is "
                           "re-noised: 1 for a new video from WanImageToVideo."),
        ], outputs=[output(io.Latent, "LATENT", "The sampled video latent, for VAE Decode.")])

    @classmethod
    def execute(cls, model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent, positive,
                negative, latent_image, seed, steps, cfg, portrait_cfg, sampler_name, scheduler,
                denoise) -> io.NodeOutput:
        patched = portrait_model(model, adapter, portrait_embeds, portrait_strength, start_percent, end_percent)
        guider = portrait_guider(patched, positive, negative, cfg, portrait_cfg)
        return io.NodeOutput(run_sampler(patched, guider, latent_image, seed, steps, sampler_name, scheduler, denoise))


def run_sampler(patched, guider, latent_image: dict, seed: int, steps: int, sampler_name: str, scheduler: str,
                denoise: float = 1.0) -> dict:
    """What KSampler does, with ``guider``: the sampled LATENT (a copy of ``latent_image`` with new samples), with
    ComfyUI's progress bar and previews."""
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
    return out


NODES = [FantasyPortraitApply, FantasyPortraitGuider, FantasyPortraitSampler]
