"""The portrait branch inside ComfyUI's native Wan model (imported only inside ComfyUI).

* :func:`apply_portrait` returns a patched clone of the user's MODEL. Every Wan block gets a
  ``("dit", "double_block", i)`` replace patch that runs the host's **own** block
  (``original_block``) with two temporary hooks on that block's cross-attention: one keeps the
  query (the output of ``cross_attn.norm_q``), the other adds the adapter's attention to the input
  of ``cross_attn.o``, exactly where the released model adds it. Whatever a ComfyUI version does
  inside the block (extra patches, attention options, LoRA, fp8, offloading) still happens.
* Window K/V are projected per block call (0.2% of a step's FLOPs at 480p x 81 frames), so between
  block calls the branch keeps only the token windows and the mask on the device; the K/V
  projection weights live in their own ModelPatcher, which ComfyUI loads, offloads and counts.
* A ``DIFFUSION_MODEL`` wrapper hands the per-call information (which batch rows carry the
  portrait, whether the current sigma is inside start/end percent, which latent frames a context
  window covers) to the block patches; an ``OUTER_SAMPLE`` wrapper checks the embeds against the
  latent being sampled and converts start/end percent with the model sampling in effect then.
  Both sit under one key, so applying the portrait again replaces it instead of nesting.
* :class:`PortraitGuider` implements the released guidance with a separate portrait scale through
  ComfyUI's CFG functions, so other guidance patches (RescaleCFG, CFGZeroStar, APG, ...) still apply.
"""

from __future__ import annotations

import logging
import math

import torch

import comfy.conds
import comfy.ldm.wan.model
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers

from ..fantasyportrait_core.branch.attention import AdapterProjections, adapter_cross_attention, project_window_kv
from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.tokens.windows import check_latent_fit

log = logging.getLogger("FantasyPortrait")

WRAPPER_KEY = "fantasyportrait"
SCALE_COND = "fantasyportrait_scale"
I2V_IN_DIM = 36  # 16 noise + 4 mask + 16 image-latent channels


class PortraitState:
    """What every block patch and every clone of one patched model shares (never copied)."""

    def __init__(self, projections: comfy.model_patcher.ModelPatcher, windows: torch.Tensor,
                 mask: torch.Tensor | None, strength: float, start_percent: float, end_percent: float,
                 num_heads: int, query_scale: torch.Tensor | None = None, grid: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None):
        self.projections = projections
        self.windows = windows          # [1, T_lat, W, C] float32, cpu
        self.mask = mask                # [T_lat, L, W] bool (or [L, W]) or None
        self.query_scale = query_scale  # [L] per-token multiplier (per-person strengths) or None
        self.grid, self.size = grid, size  # token grid (rows, cols) / pixels the mask was built for
        self.strength = strength
        self.start_percent, self.end_percent = start_percent, end_percent
        self.num_heads = num_heads
        self.run: PortraitRun | None = None

    @property
    def latent_frames(self) -> int:
        return self.windows.shape[1]

    def __deepcopy__(self, memo):  # ModelPatcher.clone() deep-copies model_options in some releases
        return self

    def check_latent(self, shape) -> None:
        check_latent_fit(self.latent_frames, shape, self.grid, self.size)

    def current_run(self) -> "PortraitRun":
        """The run in progress, or a whole-schedule one for a model call outside a sampler."""
        return self.run if self.run is not None else PortraitRun(self, math.inf, -math.inf)


class PortraitRun:
    """Per-sampling-run data: the sigma range and the small tensors kept on the compute device."""

    def __init__(self, state: PortraitState, sigma_start: float, sigma_end: float):
        self.state = state
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self._held: dict = {}

    def active(self, sigma) -> bool:
        if sigma is None:
            return True
        s = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
        return self.sigma_end <= s <= self.sigma_start

    def _on(self, name, tensor, device, dtype=None):
        key = (name, device, dtype)
        held = self._held.get(name)
        if held is None or held[0] != key:
            self._held[name] = (key, tensor.to(device=device, dtype=dtype) if dtype else tensor.to(device))
        return self._held[name][1]

    def windows(self, device, dtype):
        return self._on("windows", self.state.windows, device, dtype)

    def mask(self, device):
        mask = self.state.mask
        if mask is None:
            return None
        if mask.ndim == 3 and mask.shape[0] > 1 and mask.stride(0) == 0:  # the same for every latent frame
            return self._on("mask", mask[0], device).expand(mask.shape)
        return self._on("mask", mask, device)

    def query_scale(self, device):
        qs = self.state.query_scale
        return None if qs is None else self._on("query_scale", qs, device)

    def held_bytes(self) -> int:
        """Bytes this run keeps on its devices between block calls."""
        return sum(t.numel() * t.element_size() for _, t in self._held.values())

    def kv(self, index: int, frames, device, dtype):
        """Keys and values of block ``index`` for the given latent frames (all if None), made now."""
        block = self.state.projections.model.blocks[index]
        windows = self.windows(device, dtype)
        if frames is not None:
            windows = windows[:, frames]
        k = comfy.model_management.cast_to(block.k, dtype=dtype, device=device)
        v = comfy.model_management.cast_to(block.v, dtype=dtype, device=device)
        return project_window_kv(windows, k, v)


class PortraitBlockPatch:
    """Replace patch of one Wan block: the host's block with the adapter added before ``cross_attn.o``."""

    def __init__(self, index: int, state: PortraitState):
        self.index = index
        self.state = state

    def __deepcopy__(self, memo):
        return self

    def __call__(self, args, extra):
        info = args["transformer_options"].get(WRAPPER_KEY)
        if info is None or not info["active"]:
            return extra["original_block"](args)
        state, run, frames, rows = self.state, info["run"], info["frames"], info["rows"]
        scale, mask, query_scale = info["scale"], info["mask"], info["query_scale"]

        def branch(q):
            k, v = run.kv(self.index, frames, q.device, q.dtype)
            if rows.numel() == q.shape[0]:
                return adapter_cross_attention(q, k, v, state.num_heads, scale.to(q.dtype), mask, query_scale)
            out = torch.zeros_like(q)
            out[rows] = adapter_cross_attention(q[rows], k, v, state.num_heads, scale[rows].to(q.dtype), mask,
                                                query_scale)
            return out

        cross_attn = info["diffusion_model"].blocks[self.index].cross_attn
        seen = {}

        def keep_query(module, inputs, output):
            seen["q"] = output

        def add_branch(module, inputs):
            q = seen.pop("q", None)
            if q is None or "added" in seen:
                return None
            seen["added"] = True
            return (inputs[0] + branch(q),) + tuple(inputs[1:])

        hooks = [cross_attn.norm_q.register_forward_hook(keep_query),
                 cross_attn.o.register_forward_pre_hook(add_branch)]
        try:
            out = extra["original_block"](args)
        finally:
            for hook in hooks:
                hook.remove()
        if "added" not in seen:
            raise FantasyPortraitError(
                "This ComfyUI version's Wan block did not compute its cross-attention through cross_attn.norm_q and "
                "cross_attn.o, so the portrait could not be added. Please report your ComfyUI version.")
        return out

    def to(self, device_or_dtype):
        return self

    def models(self):
        return [self.state.projections] if self.index == 0 else []


def _window_frames(window, latent_frames: int, call_frames: int):
    """Latent frames of a context window's model call, including an anchor frame a host prepends."""
    frames = [i % latent_frames for i in window.index_list]
    anchor = getattr(window, "causal_anchor_index", None)
    if anchor is not None and anchor >= 0:
        frames = [anchor % latent_frames] + frames
    if len(frames) != call_frames:
        raise FantasyPortraitError(
            f"A context window covers {len(frames)} latent frames but its model call has {call_frames}; this context "
            "window scheme is not supported by FantasyPortrait.")
    return frames


def call_info(state: PortraitState, run: PortraitRun, batch: int, device, diffusion_model, scale=None, frames=None,
              active: bool = True) -> dict:
    """What the block patches of one model call share, prepared once per call (not once per block):
    per-row strengths (``scale``: the per-row on/off cond, None = on), the rows that carry the portrait,
    and the mask and per-token strengths on the call's device, cut to a context window's ``frames``."""
    info = {"run": run, "frames": frames, "diffusion_model": diffusion_model, "active": False}
    if not active or state.strength == 0:
        return info
    scale = torch.ones(batch) if scale is None else scale
    scale = scale.to(device=device, dtype=torch.float32).reshape(-1) * state.strength
    rows = torch.nonzero(scale).flatten()
    if rows.numel() == 0:
        return info
    mask = run.mask(device)
    if frames is not None and mask is not None:
        mask = mask[frames]
    info.update(active=True, scale=scale, rows=rows, mask=mask, query_scale=run.query_scale(device))
    return info


def _diffusion_model_wrapper(state: PortraitState):
    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                **kwargs):
        topts = transformer_options or {}
        run = state.current_run()
        window = topts.get("context_window")
        frames = None
        if window is not None and getattr(window, "index_list", None) is not None:
            frames = _window_frames(window, state.latent_frames, x.shape[2])
        elif x.ndim == 5:
            state.check_latent(x.shape)
        info = call_info(state, run, x.shape[0], x.device, executor.class_obj, kwargs.get(SCALE_COND), frames,
                         run.active(topts.get("sigmas")))
        topts = {**topts, WRAPPER_KEY: info}
        return executor(x, timestep, context, clip_fea, time_dim_concat, topts, **kwargs)

    return wrapper


def _outer_sample_wrapper(state: PortraitState):
    def wrapper(executor, noise, latent_image, *args, **kwargs):
        shape = latent_image.shape
        if len(shape) != 5 and kwargs.get("latent_shapes"):  # newer releases pack several latents into one
            shape = tuple(kwargs["latent_shapes"][0])
        state.check_latent(shape)
        sampling = executor.class_obj.model_patcher.get_model_object("model_sampling")
        state.run = PortraitRun(state, float(sampling.percent_to_sigma(state.start_percent)),
                                float(sampling.percent_to_sigma(state.end_percent)))
        try:
            return executor(noise, latent_image, *args, **kwargs)
        finally:
            state.run = None  # window/mask copies are per run; free them when sampling ends or is cancelled

    return wrapper


def check_wan_model(model, adapter) -> None:
    """Refuse models the portrait branch cannot run on; warn on structurally compatible ones it was
    not trained for."""
    dm = model.get_model_object("diffusion_model")
    kind = type(dm)
    if kind is not comfy.ldm.wan.model.WanModel:
        name = kind.__name__
        if isinstance(dm, comfy.ldm.wan.model.WanModel):
            raise FantasyPortraitError(
                f"This is a Wan variant ({name}: VACE, HuMo, S2V, camera or similar) with its own block structure; "
                "FantasyPortrait needs a plain Wan 2.1 I2V 14B model (Load Diffusion Model).")
        raise FantasyPortraitError(
            f"FantasyPortrait needs a Wan 2.1 I2V 14B model (Load Diffusion Model); this MODEL is a {name}.")
    if getattr(dm, "in_dim", None) != I2V_IN_DIM:
        raise FantasyPortraitError(
            f"This Wan model takes {dm.in_dim} input channels, so it is a text-to-video model; FantasyPortrait needs "
            "an image-to-video model (wan2.1_i2v_480p_14B or 720p).")
    if len(dm.blocks) != len(adapter.blocks):
        raise FantasyPortraitError(
            f"The adapter has {len(adapter.blocks)} blocks but this Wan model has {len(dm.blocks)}: FantasyPortrait "
            "was trained for Wan 2.1 I2V 14B (40 blocks).")
    if adapter.blocks.model_dim != dm.dim:
        raise FantasyPortraitError(
            f"The adapter projects to width {adapter.blocks.model_dim} but this Wan model's width is {dm.dim}: "
            "use Wan 2.1 I2V 14B.")
    img_emb = getattr(dm, "img_emb", None)
    if img_emb is None or getattr(img_emb, "emb_pos", None) is not None:
        log.warning("FantasyPortrait: this Wan I2V model is not Wan 2.1 I2V 14B (%s); it has the same structure, so "
                    "the portrait runs, but the adapter was not trained for it and results may be poor.",
                    "first-last-frame model" if img_emb is not None else "no CLIP-image attention, e.g. Wan 2.2")


def portrait_state(model) -> PortraitState | None:
    """The portrait a MODEL carries (from :func:`apply_portrait`), or None."""
    dit = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    patch = dit.get(("double_block", 0))
    return patch.state if isinstance(patch, PortraitBlockPatch) else None


def _projections(adapter, model) -> comfy.model_patcher.ModelPatcher:
    """One ModelPatcher per adapter and load device, shared by every Apply (weights are never copied)."""
    held = getattr(adapter, "_comfy_projections", None)
    module = held.model if held is not None else AdapterProjections(adapter.blocks.weights)
    return managed_module(adapter, "_comfy_projections", module, model.load_device)


def apply_portrait(model, adapter, windows: torch.Tensor, strength: float = 1.0, start_percent: float = 0.0,
                   end_percent: float = 1.0, mask: torch.Tensor | None = None,
                   query_scale: torch.Tensor | None = None, grid: tuple[int, int] | None = None,
                   size: tuple[int, int] | None = None):
    """A clone of ``model`` (native Wan 2.1 I2V) with the portrait branch in every block.

    A portrait already on ``model`` is replaced, not stacked."""
    require_finite(portrait_strength=strength, start_percent=start_percent, end_percent=end_percent)
    check_wan_model(model, adapter)
    if windows.ndim == 3:
        windows = windows.unsqueeze(0)
    if windows.shape[0] != 1:
        raise FantasyPortraitError("Portrait embeds must be for one output video (concatenate persons first).")
    if not torch.isfinite(windows).all():
        raise FantasyPortraitError("The portrait embeds contain NaN or infinite values; re-run FantasyPortrait Encode.")
    dm = model.get_model_object("diffusion_model")
    state = PortraitState(_projections(adapter, model), windows.float().cpu(), mask, float(strength),
                          float(start_percent), float(end_percent), num_heads=dm.blocks[0].num_heads,
                          query_scale=query_scale, grid=grid, size=size)
    patched = model.clone()
    dit = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    if portrait_state(model) is not None:
        log.info("FantasyPortrait: this MODEL already carried a portrait; it is replaced by the new one.")
    elif any(key[0] == "double_block" for key in dit):
        log.warning("FantasyPortrait: another node's Wan block patch is replaced by the portrait branch (ComfyUI "
                    "does not chain block replace patches).")
    for wrapper_type in (comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                         comfy.patcher_extension.WrappersMP.OUTER_SAMPLE):
        patched.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    for i in range(len(dm.blocks)):
        patched.set_model_patch_replace(PortraitBlockPatch(i, state), "dit", "double_block", i)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 _diffusion_model_wrapper(state))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 _outer_sample_wrapper(state))
    return patched


def with_portrait_scale(conditioning, value: float):
    """Conditioning whose model calls carry the portrait on (1) or off (0)."""
    out = []
    for emb, opts in conditioning:
        opts = opts.copy()
        model_conds = dict(opts.get("model_conds", {}))
        model_conds[SCALE_COND] = comfy.conds.CONDRegular(torch.tensor([float(value)]))
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
            "positive": with_portrait_scale(self._pos, 1.0),
            "negative": with_portrait_scale(self._neg, 0.0 if guided else 1.0),
            **({"no_portrait": with_portrait_scale(self._pos, 0.0)} if guided else {}),
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


def managed_module(owner, attr: str, module: torch.nn.Module, load_device) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher for a small model, kept on ``owner`` (one per owner and load device), so that
    ComfyUI's model management loads, offloads and frees it like any other model."""
    held = getattr(owner, attr, None)
    if held is None or held.model is not module or held.load_device != load_device:
        held = comfy.model_patcher.ModelPatcher(module, load_device=load_device,
                                                offload_device=comfy.model_management.unet_offload_device())
        setattr(owner, attr, held)
    return held


def load_managed(patcher: comfy.model_patcher.ModelPatcher):
    """Load a managed model to its device through ComfyUI; returns the module and the device."""
    comfy.model_management.load_models_gpu([patcher])
    return patcher.model, patcher.load_device
