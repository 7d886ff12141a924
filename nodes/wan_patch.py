"""The portrait branch inside ComfyUI's native Wan model (imported only inside ComfyUI).

:func:`apply_portrait` returns a patched clone of the user's MODEL:

* every Wan block gets a ``("dit", "double_block", i)`` replace patch (:class:`PortraitBlockPatch`) that runs
  the host's **own** block (``original_block``) with two temporary hooks on that block's cross-attention: one
  keeps the query (the output of ``cross_attn.norm_q``), the other adds the adapter's attention to the input
  of ``cross_attn.o``, exactly where the released model adds it. Whatever a ComfyUI release does inside the
  block (attn1/attn2 patches, attention options, LoRA, fp8, offloading) still happens;
* a ``DIFFUSION_MODEL`` wrapper prepares, once per model call, what the 40 block patches of that call share
  (:class:`PortraitCall`); an ``OUTER_SAMPLE`` wrapper checks the embeds against the latent being sampled and
  starts a :class:`PortraitRun` (the sigma range of start/end percent, the small tensors kept on the device).
  Both sit under one key, so applying the portrait again replaces it instead of nesting.

Why a replace patch and not ``attn2_patch``: newer releases call ``attn2_patch`` with ``{"x", ...}`` *after*
``x = x + cross_attn(...)`` (Comfy-Org/ComfyUI 0c9a69ae ``comfy/ldm/wan/model.py``, ``WanAttentionBlock.forward``),
i.e. after ``cross_attn.o``; the released model adds the branch *before* ``o`` and needs the block's own query,
which that patch is not given. Recomputing ``norm_q(q(norm3(x)))`` there and adding ``o.weight @ branch`` would
be exact only without LoRA/fp8 scaling on ``o``'s input and costs a second query projection, so the replace
patch stays; it is the one contract packs cannot chain (a second replace patch on the same block wins).

Window K/V are projected per block call (0.2% of a step's FLOPs at 480p x 81 frames), so between block calls
only the token windows, the mask and per-token strengths stay on the device; the K/V projection weights are
a managed model of their own (:mod:`.managed`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

import comfy.ldm.wan.model
import comfy.model_management
import comfy.patcher_extension

from ..fantasyportrait_core.branch.attention import AdapterProjections, adapter_cross_attention, project_window_kv
from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.tokens.windows import check_latent_fit
from .managed import managed_module

log = logging.getLogger("FantasyPortrait")

WRAPPER_KEY = "fantasyportrait"
PORTRAIT_ON_COND = "fantasyportrait_on"  # per-row model cond: 1 = this row carries the portrait, 0 = not
I2V_IN_DIM = 36  # 16 noise + 4 mask + 16 image-latent channels


class PortraitState:
    """What every block patch and every clone of one patched model shares (never copied)."""

    def __init__(self, projections, windows: torch.Tensor, mask: torch.Tensor | None, strength: float,
                 start_percent: float, end_percent: float, num_heads: int, query_scale: torch.Tensor | None = None,
                 grid: tuple[int, int] | None = None, size: tuple[int, int] | None = None):
        self.projections = projections  # the managed AdapterProjections (ModelPatcher)
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
    """One sampling run: its sigma range, the context windows' retained latent frames, and the small tensors
    kept on each compute device. Cond batches may run in threads, one per device (Comfy-Org/ComfyUI e0d4ea77
    ``comfy/samplers.py``, ``_calc_cond_batch_multigpu``), so each device holds its own copy."""

    def __init__(self, state: PortraitState, sigma_start: float, sigma_end: float, retained: tuple = ()):
        self.state = state
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.retained = retained  # latent_retain_index_list of the run's context handler
        self._held: dict = {}  # (name, device) -> tensor

    def active(self, sigma) -> bool:
        if sigma is None:
            return True
        s = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
        return self.sigma_end <= s <= self.sigma_start

    def _on(self, name, tensor, device, dtype=None):
        key = (name, torch.device(device))
        held = self._held.get(key)
        if held is None or (dtype is not None and held.dtype != dtype):
            held = tensor.to(device=device, dtype=dtype) if dtype else tensor.to(device)
            self._held[key] = held  # one copy per device (a new dtype replaces it)
        return held

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

    def held_bytes(self, device=None) -> int:
        """Bytes this run keeps between block calls (on ``device``, e.g. "cuda" or "cuda:1", or on all devices)."""
        want = None if device is None else torch.device(device)
        return sum(t.numel() * t.element_size() for (_, on), t in list(self._held.items())  # others may add meanwhile
                   if want is None or (on.type == want.type and want.index in (None, on.index)))

    def kv(self, index: int, frames, device, dtype):
        """Keys and values of block ``index`` for the given latent frames (all if None), made now."""
        block = self.state.projections.model.blocks[index]
        windows = self.windows(device, dtype)
        if frames is not None:
            windows = windows[:, frames]
        k = comfy.model_management.cast_to(block.k, dtype=dtype, device=device)
        v = comfy.model_management.cast_to(block.v, dtype=dtype, device=device)
        return project_window_kv(windows, k, v)


@dataclass
class PortraitCall:
    """What the block patches of one model call share, prepared once per call (not once per block)."""

    run: PortraitRun
    diffusion_model: torch.nn.Module  # the call's WanModel (on its own device when cond batches are threaded)
    frames: list | None = None  # global latent frames of a context window's call (None: all, in order)
    video: slice | None = None  # the video tokens in the block's sequence (None: every token is one)
    scale: torch.Tensor | None = None  # per-row portrait strength [B] (0 = row without the portrait)
    rows: torch.Tensor | None = None  # rows with a non-zero strength; None = the branch is off for this call
    mask: torch.Tensor | None = None  # on the call's device, cut to ``frames``
    query_scale: torch.Tensor | None = None  # per-token strengths, on the call's device

    @property
    def active(self) -> bool:
        return self.rows is not None

    def branch(self, index: int, q: torch.Tensor, num_heads: int) -> torch.Tensor:
        """The adapter output of block ``index`` for the block's query ``q`` (zero outside the video tokens
        and in rows without the portrait)."""
        k, v = self.run.kv(index, self.frames, q.device, q.dtype)
        every = slice(0, q.shape[1])
        video = self.video or every
        if self.rows.numel() == q.shape[0] and video == every:
            return adapter_cross_attention(q, k, v, num_heads, self.scale.to(q.dtype), self.mask, self.query_scale)
        out = torch.zeros_like(q)
        out[self.rows, video] = adapter_cross_attention(q[self.rows, video], k, v, num_heads,
                                                        self.scale[self.rows].to(q.dtype), self.mask, self.query_scale)
        return out


def prepare_call(state: PortraitState, run: PortraitRun, batch: int, device, diffusion_model, on=None, frames=None,
                 video: slice | None = None, active: bool = True) -> PortraitCall:
    """The :class:`PortraitCall` of one model call: ``on`` is the per-row on/off cond (None = on), ``frames``
    a context window's latent frames, ``video`` where the video tokens sit; the branch is off outside
    start/end percent (``active``), at strength 0 and when no row carries the portrait."""
    call = PortraitCall(run, diffusion_model, frames, video)
    if not active or state.strength == 0:
        return call
    scale = torch.ones(batch) if on is None else on.to(device="cpu", dtype=torch.float32)
    scale = scale.reshape(-1) * state.strength
    rows = torch.nonzero(scale).flatten()
    if rows.numel() == 0:
        return call
    scale, rows = scale.to(device), rows.to(device)
    mask = run.mask(device)
    if frames is not None and mask is not None:
        mask = mask[frames]
    call.scale, call.rows, call.mask, call.query_scale = scale, rows, mask, run.query_scale(device)
    return call


class PortraitBlockPatch:
    """Replace patch of Wan block ``index``: the host's block with the adapter added before ``cross_attn.o``.

    The patch protocol of ModelPatcher: it calls ``to(device)`` on every patch before sampling
    (``model_patches_to``) and loads what ``models()`` returns together with the model
    (``model_patches_models``). This patch keeps no tensor of its own (K/V are cast per call), so ``to``
    returns it unchanged; the projections are declared once, by block 0's patch, so ComfyUI counts them once.
    """

    def __init__(self, index: int, state: PortraitState):
        self.index = index
        self.state = state

    def __deepcopy__(self, memo):
        return self

    def __call__(self, args, extra):
        call = args["transformer_options"].get(WRAPPER_KEY)
        if call is None or not call.active:
            return extra["original_block"](args)
        cross_attn = call.diffusion_model.blocks[self.index].cross_attn
        queries, added = [], []  # the query of this block's cross-attention, kept between the two hooks

        def keep_query(module, inputs, output):
            queries.append(output)

        def add_branch(module, inputs):
            if not queries or added:
                return None
            added.append(True)
            return (inputs[0] + call.branch(self.index, queries.pop(), self.state.num_heads),) + tuple(inputs[1:])

        hooks = [cross_attn.norm_q.register_forward_hook(keep_query),
                 cross_attn.o.register_forward_pre_hook(add_branch)]
        try:
            out = extra["original_block"](args)
        finally:
            for hook in hooks:
                hook.remove()
        if not added:
            raise FantasyPortraitError(
                "This ComfyUI version's Wan block did not compute its cross-attention through cross_attn.norm_q and "
                "cross_attn.o, so the portrait could not be added. Please report your ComfyUI version.")
        return out

    def to(self, device_or_dtype):
        return self

    def models(self):
        return [self.state.projections] if self.index == 0 else []


def window_frames(window, latent_frames: int, call_frames: int, retained=()) -> list:
    """Global latent frames of a context window's model call, in the order of its latent: an anchor frame the
    host puts first (``window.causal_anchor_index``), then ``window.index_list``; a retained position ``i``
    (the handler's ``latent_retain_index_list``) holds global frame ``i`` (Comfy-Org/ComfyUI
    ``comfy/context_windows.py``, ``IndexListContextWindow.get_tensor``: ``window[i] = full[i]``)."""
    frames = [i % latent_frames for i in window.index_list]
    anchor = getattr(window, "causal_anchor_index", None)
    if anchor is not None and anchor >= 0:
        frames = [anchor % latent_frames] + frames
    for i in retained:  # as the host indexes: a negative position counts from the end of both
        if -min(len(frames), latent_frames) <= i < min(len(frames), latent_frames):
            frames[i] = i % latent_frames
    if len(frames) != call_frames:
        raise FantasyPortraitError(
            f"A context window covers {len(frames)} latent frames but its model call has {call_frames}; this context "
            "window scheme is not supported by FantasyPortrait.")
    return frames


def video_tokens(dm, x: torch.Tensor, kwargs) -> slice:
    """Where the tokens of the video latent ``x`` sit in the blocks' sequence. Newer releases add tokens beside
    them (Comfy-Org/ComfyUI 0c9a69ae ``comfy/ldm/wan/model.py``, ``forward_orig``: a ``reference_latent``'s
    tokens before the video when the model has ``ref_conv``, in-context ``context_latents`` after it,
    ``time_dim_concat`` frames after the video frames; ``transformer_options["grid_sizes"]`` is the grid with
    those frames), which the branch leaves as they are."""
    pt, ph, pw = dm.patch_size
    count = math.ceil(x.shape[2] / pt) * math.ceil(x.shape[3] / ph) * math.ceil(x.shape[4] / pw)
    first = 0
    ref = kwargs.get("reference_latent")
    if getattr(dm, "ref_conv", None) is not None and ref is not None:
        first = (ref.shape[-2] // ph) * (ref.shape[-1] // pw)
    return slice(first, first + count)


def _diffusion_model_wrapper(state: PortraitState):
    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                **kwargs):
        topts = transformer_options or {}
        run = state.current_run()
        window = topts.get("context_window")
        frames = None
        if window is not None and getattr(window, "index_list", None) is not None:
            frames = window_frames(window, state.latent_frames, x.shape[2], run.retained)
        elif x.ndim == 5:
            state.check_latent(x.shape)
        dm = executor.class_obj
        call = prepare_call(state, run, x.shape[0], x.device, dm, kwargs.get(PORTRAIT_ON_COND), frames,
                            video_tokens(dm, x, kwargs), run.active(topts.get("sigmas")))
        topts = {**topts, WRAPPER_KEY: call}
        return executor(x, timestep, context, clip_fea, time_dim_concat, topts, **kwargs)

    return wrapper


def _outer_sample_wrapper(state: PortraitState):
    def wrapper(executor, noise, latent_image, *args, **kwargs):
        shape = latent_image.shape
        if len(shape) != 5 and kwargs.get("latent_shapes"):  # newer releases pack several latents into one
            shape = tuple(kwargs["latent_shapes"][0])
        state.check_latent(shape)
        guider = executor.class_obj
        sampling = guider.model_patcher.get_model_object("model_sampling")
        handler = getattr(guider, "model_options", {}).get("context_handler")
        state.run = PortraitRun(state, float(sampling.percent_to_sigma(state.start_percent)),
                                float(sampling.percent_to_sigma(state.end_percent)),
                                tuple(getattr(handler, "latent_retain_index_list", None) or ()))
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


def _projections(adapter, model):
    """The adapter's K/V projections as a managed model, one per adapter and load device, shared by every
    Apply (weights are never copied)."""
    return managed_module(adapter, "projections", lambda: AdapterProjections(adapter.blocks.weights),
                          model.load_device)


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
