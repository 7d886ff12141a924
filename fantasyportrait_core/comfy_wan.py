"""The portrait branch inside ComfyUI's native Wan model (imported only inside ComfyUI).

* :func:`apply_portrait` returns a patched clone of the user's MODEL: every Wan block gets a
  ``("dit", "double_block", i)`` replace patch that recomputes the block body with the block's own
  modules (so LoRAs, fp8 weights and offloading behave as usual) and adds the adapter's
  cross-attention before the cross-attention output projection, as the released model does. The
  K/V projections live in their own ModelPatcher and are loaded/offloaded with the model.
* A ``DIFFUSION_MODEL`` wrapper hands the per-call information (which batch rows carry the
  portrait, the CLIP-image context length, whether the current sigma is inside
  start/end percent) to the block patches.
* :class:`PortraitGuider` implements the released guidance with a separate portrait scale, running
  the needed passes in one batch.
"""

from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
from comfy.ldm.modules.attention import optimized_attention
from comfy.ldm.wan.model import repeat_e

from .attention import AdapterProjections, adapter_cross_attention
from .errors import FantasyPortraitError

WRAPPER_KEY = "fantasyportrait"
SCALE_COND = "fantasyportrait_scale"


class PortraitState:
    """What every block patch of one patched model shares."""

    def __init__(self, projections: comfy.model_patcher.ModelPatcher, windows: torch.Tensor,
                 mask: torch.Tensor | None, strength: float, sigma_start: float, sigma_end: float, num_heads: int,
                 query_scale: torch.Tensor | None = None):
        self.projections = projections
        self.windows = windows  # [1, T_lat, W, C] float32, cpu
        self.mask = mask        # [T_lat, L, W] bool or None
        self.query_scale = query_scale  # [L] per-token multiplier (per-person strengths) or None
        self.strength = strength
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.num_heads = num_heads
        self._kv: dict = {}

    def kv(self, index: int, device, dtype):
        """Window keys/values of block ``index``: computed once per run and reused at every step."""
        key = (index, device, dtype)
        if key not in self._kv:
            module: AdapterProjections = self.projections.model
            block = module.blocks[index]
            weight_k = comfy.model_management.cast_to(block.k, dtype=dtype, device=device)
            weight_v = comfy.model_management.cast_to(block.v, dtype=dtype, device=device)
            windows = self.windows.to(device=device, dtype=dtype)
            self._kv[key] = (torch.nn.functional.linear(windows, weight_k), torch.nn.functional.linear(windows, weight_v))
        return self._kv[key]

    def clear(self):
        self._kv.clear()

    def active(self, sigma) -> bool:
        if sigma is None:
            return True
        s = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
        return self.sigma_end <= s <= self.sigma_start


def _cross_attention(ca, x, context, context_img_len, topts, adapter):
    """The block's cross-attention with the adapter branch added before ``o`` (released order)."""
    q = ca.norm_q(ca.q(x))
    if hasattr(ca, "k_img"):  # image-to-video
        ctx_img, ctx = context[:, :context_img_len], context[:, context_img_len:]
        k, v = ca.norm_k(ca.k(ctx)), ca.v(ctx)
        k_img, v_img = ca.norm_k_img(ca.k_img(ctx_img)), ca.v_img(ctx_img)
        img_x = optimized_attention(q, k_img, v_img, heads=ca.num_heads, transformer_options=topts)
        out = optimized_attention(q, k, v, heads=ca.num_heads, transformer_options=topts)
        out = out + img_x
    else:
        out = optimized_attention(q, ca.norm_k(ca.k(context)), ca.v(context), heads=ca.num_heads,
                                  transformer_options=topts)
    return ca.o(out + adapter(q))


def portrait_block_forward(block, x, e, freqs, context, context_img_len, topts, adapter):
    """``WanAttentionBlock.forward`` with the portrait branch; same modules, same order."""
    mod = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    e = (mod + e).chunk(6, dim=1) if e.ndim < 4 else (mod.unsqueeze(0) + e).unbind(2)
    y = block.self_attn(torch.addcmul(repeat_e(e[0], x), block.norm1(x), 1 + repeat_e(e[1], x)), freqs,
                        transformer_options=topts)
    x = torch.addcmul(x, y, repeat_e(e[2], x))
    del y
    x = x + _cross_attention(block.cross_attn, block.norm3(x), context, context_img_len, topts, adapter)
    y = block.ffn(torch.addcmul(repeat_e(e[3], x), block.norm2(x), 1 + repeat_e(e[4], x)))
    return torch.addcmul(x, y, repeat_e(e[5], x))


class PortraitBlockPatch:
    def __init__(self, index: int, state: PortraitState):
        self.index = index
        self.state = state

    def __call__(self, args, extra):
        topts = args["transformer_options"]
        info = topts.get(WRAPPER_KEY)
        state = self.state
        if info is None or not info["active"] or state.strength == 0:
            return extra["original_block"](args)
        scale = info["scale"]
        x = args["img"]
        if scale is None:
            scale = torch.ones(x.shape[0])
        scale = scale.to(device=x.device, dtype=torch.float32).reshape(-1) * state.strength
        rows = torch.nonzero(scale).flatten()
        if rows.numel() == 0:
            return extra["original_block"](args)
        k, v = state.kv(self.index, x.device, x.dtype)
        mask = state.mask
        frames = info.get("frames")
        if frames is not None:  # a context window: only these latent frames are in this call
            k, v = k[:, frames], v[:, frames]
            mask = mask[frames] if mask is not None else None

        def adapter(q):
            if rows.numel() == q.shape[0]:
                return adapter_cross_attention(q, k, v, state.num_heads, scale.to(q.dtype), mask, state.query_scale)
            out = torch.zeros_like(q)
            out[rows] = adapter_cross_attention(q[rows], k, v, state.num_heads, scale[rows].to(q.dtype), mask,
                                                state.query_scale)
            return out

        block = info["diffusion_model"].blocks[self.index]
        x = portrait_block_forward(block, x, args["vec"], args["pe"], args["txt"], info["context_img_len"], topts, adapter)
        return {"img": x}

    def to(self, device_or_dtype):
        return self

    def models(self):
        return [self.state.projections] if self.index == 0 else []


def _diffusion_model_wrapper(state: PortraitState):
    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                **kwargs):
        scale = kwargs.pop(SCALE_COND, None)
        window = (transformer_options or {}).get("context_window")
        frames = None
        if window is not None and getattr(window, "index_list", None) is not None:
            frames = [i % state.windows.shape[1] for i in window.index_list]
        info = {
            "frames": frames,
            "scale": scale,
            "context_img_len": clip_fea.shape[-2] if clip_fea is not None else None,
            "active": state.active((transformer_options or {}).get("sigmas")),
            "diffusion_model": executor.class_obj,
        }
        transformer_options = {**(transformer_options or {}), WRAPPER_KEY: info}
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)

    return wrapper


def _outer_sample_wrapper(state: PortraitState):
    def wrapper(executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            state.clear()  # K/V are per run; free them when sampling ends or is cancelled

    return wrapper


def apply_portrait(model, adapter, windows: torch.Tensor, strength: float = 1.0, start_percent: float = 0.0,
                   end_percent: float = 1.0, mask: torch.Tensor | None = None,
                   query_scale: torch.Tensor | None = None):
    """A clone of ``model`` (native Wan) with the portrait branch in every block."""
    dm = model.get_model_object("diffusion_model")
    blocks = getattr(dm, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "cross_attn"):
        raise FantasyPortraitError("FantasyPortrait needs a Wan 2.1 model (load it with Load Diffusion Model).")
    if len(blocks) != len(adapter.blocks):
        raise FantasyPortraitError(
            f"The adapter has {len(adapter.blocks)} blocks but this Wan model has {len(blocks)}: FantasyPortrait "
            "was trained for Wan 2.1 I2V 14B (40 blocks).")
    if adapter.blocks.model_dim != dm.dim:
        raise FantasyPortraitError(
            f"The adapter projects to width {adapter.blocks.model_dim} but this Wan model's width is {dm.dim}: "
            "use Wan 2.1 I2V 14B.")
    if windows.ndim == 3:
        windows = windows.unsqueeze(0)
    if windows.shape[0] != 1:
        raise FantasyPortraitError("Portrait embeds must be for one output video (concatenate persons first).")
    projections = comfy.model_patcher.ModelPatcher(
        AdapterProjections(adapter.blocks.weights), load_device=model.load_device,
        offload_device=comfy.model_management.unet_offload_device())
    sampling = model.get_model_object("model_sampling")
    state = PortraitState(projections, windows.float().cpu(), mask, strength,
                          sigma_start=float(sampling.percent_to_sigma(start_percent)),
                          sigma_end=float(sampling.percent_to_sigma(end_percent)),
                          num_heads=blocks[0].num_heads, query_scale=query_scale)
    patched = model.clone()
    for i in range(len(blocks)):
        patched.set_model_patch_replace(PortraitBlockPatch(i, state), "dit", "double_block", i)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 _diffusion_model_wrapper(state))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 _outer_sample_wrapper(state))
    return patched


def with_portrait_scale(conditioning, value: float):
    """Conditioning whose model calls carry the portrait on (1) or off (0)."""
    import comfy.conds

    out = []
    for emb, opts in conditioning:
        opts = opts.copy()
        model_conds = dict(opts.get("model_conds", {}))
        model_conds[SCALE_COND] = comfy.conds.CONDRegular(torch.tensor([float(value)]))
        opts["model_conds"] = model_conds
        out.append([emb, opts])
    return out


class PortraitGuider(comfy.samplers.CFGGuider):
    """Released guidance with a separate portrait scale.

    * ``portrait_cfg == 1``: ordinary CFG, the portrait in both passes (released behaviour);
    * ``portrait_cfg != 1, cfg == 1``: ``no_port + portrait_cfg * (pos - no_port)`` (2 passes);
    * otherwise: ``neg + cfg * (no_port - neg) + portrait_cfg * (pos - no_port)`` (3 passes, batched),
      with the portrait off in the negative and ``no_port`` passes.
    """

    def set_cfg(self, cfg, portrait_cfg=1.0):
        self.cfg = cfg
        self.portrait_cfg = portrait_cfg

    def set_conds(self, positive, negative):
        portrait_in_negative = 1.0 if math.isclose(getattr(self, "portrait_cfg", 1.0), 1.0) else 0.0
        self.inner_set_conds({
            "positive": with_portrait_scale(positive, 1.0),
            "negative": with_portrait_scale(negative, portrait_in_negative),
            "no_portrait": with_portrait_scale(positive, 0.0),
        })

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = model_options if model_options is not None else {}
        pos, neg, nop = self.conds.get("positive"), self.conds.get("negative"), self.conds.get("no_portrait")
        if math.isclose(self.portrait_cfg, 1.0):
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, neg, pos, self.cfg,
                                                    model_options=model_options, seed=seed)
        if math.isclose(self.cfg, 1.0):
            out_nop, out_pos = comfy.samplers.calc_cond_batch(self.inner_model, [nop, pos], x, timestep, model_options)
            return out_nop + self.portrait_cfg * (out_pos - out_nop)
        out_neg, out_nop, out_pos = comfy.samplers.calc_cond_batch(self.inner_model, [neg, nop, pos], x, timestep,
                                                                   model_options)
        return out_neg + self.cfg * (out_nop - out_neg) + self.portrait_cfg * (out_pos - out_nop)
