"""Run inside a real ComfyUI's Python (see tests/test_comfyui.py): the portrait patch composed the way
ComfyUI users compose it (Apply before the Sampler, clones, other model patches, other guidance
patches, wrong inputs, model management). argv: COMFYUI_DIR REPO_DIR. Prints one JSON object."""

import dataclasses
import json
import logging
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_inproc import boot, call_block_patch  # noqa: E402

H = boot(sys.argv[1], sys.argv[2])
torch, fp, cw, model, adapter, portrait = H.torch, H.fp, H.cw, H.model, H.adapter, H.portrait
positive, negative, latent, g = H.positive, H.negative, H.latent, H.g

import comfy.model_management  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3, RescaleCFG  # noqa: E402
from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures  # noqa: E402
from fantasyportrait_pack.nodes import guidance, managed  # noqa: E402

R = {}


def error_of(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def max_diff(a, b):
    return float((a - b).abs().max())


def rel(a, b):
    return float((a - b).norm() / b.norm())


def apply(m, strength=1.0, start=0.0, end=1.0, p=portrait):
    return fp.FantasyPortraitApply(m, adapter, p, strength, start, end)[0]


def ksampler(m, cfg=3.0, lat=latent, steps=3):
    return nodes.common_ksampler(m, 7, steps, cfg, "euler", "simple", positive, negative, lat)[0]["samples"]


def sampler(m, cfg=3.0, pcfg=4.0, p=portrait, lat=latent):
    return fp.FantasyPortraitSampler(m, adapter, p, 1.0, 0.0, 1.0, positive, negative, lat, 7, 3, cfg, pcfg,
                                              "euler", "simple", 1.0)[0]["samples"]


class Noise:
    seed = 7

    def generate_noise(self, lat):
        return comfy.sample.prepare_noise(lat["samples"], self.seed)


def custom(guider, steps=3, lat=latent):
    sigmas = comfy.samplers.KSampler(guider.model_patcher, steps=steps, device="cpu", sampler="euler",
                                     scheduler="simple").sigmas
    out = SamplerCustomAdvanced().sample(Noise(), guider, comfy.samplers.sampler_object("euler"), sigmas, lat)
    return (out.result if hasattr(out, "result") else out)[0]["samples"]


def guider(m, cfg, pcfg, pos=positive, neg=negative):
    return fp.FantasyPortraitGuider(m, pos, neg, cfg, pcfg)[0]


applied = apply(model)
state = cw.portrait_state(applied)

# --- Apply -> Sampler, Apply twice: the portrait is replaced, not stacked ---
plain = sampler(model)
R["apply_then_sampler_diff"] = max_diff(sampler(applied), plain)
R["apply_twice_diff"] = max_diff(ksampler(apply(apply(model, strength=0.3))), ksampler(applied))
R["portrait_effect"] = rel(ksampler(applied), ksampler(model))

# --- clones share the adapter and its state ---
clones = [applied.clone() for _ in range(10)]
R["clones_share_state"] = all(cw.portrait_state(c) is state for c in clones)
pointers = {p.data_ptr() for c in clones for p in cw.portrait_state(c).projections.model.parameters()}
R["clone_projection_storages"] = [len(pointers), len(list(state.projections.model.parameters()))]
R["clone_equals_original"] = max_diff(ksampler(clones[-1]), ksampler(applied))

# --- embeds / mask checked against the latent on every path ---
long_latent = {"samples": torch.zeros(1, 16, 6, 8, 10)}  # 21 frames; the embeds cover 9
R["length_error_ksampler"] = error_of(lambda: ksampler(applied, lat=long_latent))
R["length_error_sampler"] = error_of(lambda: sampler(model, lat=long_latent))
R["length_error_guider"] = error_of(lambda: custom(guider(applied, 3.0, 4.0), lat=long_latent))
# a mask built for 64 wide x 80 high on an 80 x 64 latent: same token count (20), transposed regions
mask = torch.ones(3, 20, portrait.embeds.windows.shape[2], dtype=torch.bool)
transposed = dataclasses.replace(portrait, mask=mask, size=(64, 80))
R["grid_error"] = error_of(lambda: ksampler(apply(model, p=transposed)))
R["grid_ok"] = error_of(lambda: ksampler(apply(model, p=dataclasses.replace(transposed, size=(80, 64))), steps=1))

# --- the host's own block runs: a host-side change inside it still takes effect ---
dm = model.model.diffusion_model
x = torch.randn(2, 3 * 20, 256, generator=g)
e = torch.randn(2, 6, 256, generator=g)
ctx = torch.randn(2, 257 + 12, 256, generator=g)
freqs = dm.rope_encode(3, 8, 10, device=x.device, dtype=x.dtype)
patch = cw.PortraitBlockPatch(1, state)
base = call_block_patch(patch, dm, x, e, freqs, ctx)
block_cls = type(dm.blocks[1])
original_forward = block_cls.forward
block_cls.forward = lambda self, *a, **k: original_forward(self, *a, **k) * 2 + 1  # a newer host's block
try:
    changed = call_block_patch(patch, dm, x, e, freqs, ctx)
finally:
    block_cls.forward = original_forward
R["wrapped_block_forward_kept"] = rel(changed, 2 * base + 1)
handle = dm.blocks[1].ffn.register_forward_hook(lambda mod, inp, out: out + 0.25)  # a hook inside the block
try:
    hooked = call_block_patch(patch, dm, x, e, freqs, ctx)
finally:
    handle.remove()
R["inner_hook_effect"] = rel(hooked, base)
R["hooks_removed_after_call"] = (len(dm.blocks[1].cross_attn.norm_q._forward_hooks) == 0
                                 and len(dm.blocks[1].cross_attn.o._forward_pre_hooks) == 0)

# --- which models are accepted ---
t2v = comfy.sd.load_diffusion_model(H.write_tiny_wan(os.path.join(H.tmp, "t2v.safetensors"), model_type="t2v",
                                                     in_dim=16))
R["t2v_error"] = error_of(lambda: apply(t2v))
wan22 = comfy.sd.load_diffusion_model(H.write_tiny_wan(os.path.join(H.tmp, "i2v22.safetensors"), model_type="t2v"))
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger("FantasyPortrait").addHandler(handler)
wan22_patched = error_of(lambda: apply(wan22))
R["wan22_apply_error"] = wan22_patched
R["wan22_warning"] = " ".join(r.getMessage() for r in records)
logging.getLogger("FantasyPortrait").removeHandler(handler)
R["non_wan_error"] = error_of(lambda: cw.check_wan_model(types.SimpleNamespace(
    get_model_object=lambda name: torch.nn.Linear(2, 2)), adapter))

# --- guidance: formulas against separate model calls; CFG functions still apply ---
def one_step(g_):
    return custom(g_, steps=1)  # euler, one step to sigma 0: the latent is the guider's prediction


def single_pass(scale, cond):
    g_ = comfy.samplers.CFGGuider(applied)
    g_.set_conds(guidance.with_portrait(cond, scale > 0), negative)
    g_.set_cfg(1.0)
    return one_step(g_)


pos_on, pos_off, neg_off = single_pass(1.0, positive), single_pass(0.0, positive), single_pass(0.0, negative)
three = one_step(guider(applied, 3.0, 4.0))
two = one_step(guider(applied, 1.0, 4.0))
R["three_pass_formula"] = rel(three, neg_off + 3.0 * (pos_off - neg_off) + 4.0 * (pos_on - pos_off))
R["two_pass_formula"] = rel(two, pos_off + 4.0 * (pos_on - pos_off))
R["portrait_guidance_effect"] = rel(three, neg_off + 3.0 * (pos_on - neg_off))
# portrait_cfg <= 1: plain CFG with the portrait in both passes (released), = Apply + KSampler
R["pcfg_below_one_equals_plain_cfg"] = max_diff(custom(guider(applied, 3.0, 0.5)), ksampler(applied))
# order of set-up does not matter
g_a = fp.FantasyPortraitGuider(applied, positive, negative, 3.0, 4.0)[0]
g_b = guidance.PortraitGuider(applied)
g_b.set_conds(positive, negative)
g_b.set_cfg(3.0, 4.0)
R["setup_order_diff"] = max_diff(custom(g_a), custom(g_b))
R["guider_without_portrait_error"] = error_of(lambda: guider(model, 3.0, 4.0))
# other guidance patches on the MODEL act through the guider (post-CFG and sampler CFG functions)
calls = []
with_post = applied.clone()
with_post.set_model_sampler_post_cfg_function(lambda a: (calls.append(a["cond_scale"]), a["denoised"] * 0.5)[1])
for cfg, pcfg in ((3.0, 4.0), (1.0, 4.0)):
    R[f"post_cfg_effect_{cfg:g}"] = rel(one_step(guider(with_post, cfg, pcfg)), one_step(guider(applied, cfg, pcfg)))
R["post_cfg_scales_seen"] = sorted(set(calls))
rescaled = RescaleCFG().patch(applied, 0.7)[0]
R["rescale_cfg_effect"] = rel(custom(guider(rescaled, 3.0, 4.0)), custom(guider(applied, 3.0, 4.0)))

# --- start/end percent follow the model sampling in effect when sampling starts ---
shift = lambda m: ModelSamplingSD3().patch(m, 5.0)[0]  # noqa: E731
before = ksampler(apply(shift(model), start=0.3, end=0.7))
after = ksampler(shift(apply(model, start=0.3, end=0.7)))
R["percent_after_shift_diff"] = max_diff(after, before)
R["percent_window_effect"] = rel(before, ksampler(apply(shift(model))))

# --- non-finite numbers are refused ---
R["nan_strength_error"] = error_of(lambda: apply(model, strength=float("nan")))
R["nan_pcfg_error"] = error_of(lambda: guider(applied, 3.0, float("inf")))

# --- memory: what the branch holds between block calls, and what ComfyUI knows about ---
seen = {}


def callback(step, x0, x_, total):
    run = state.run
    loaded = [m.model for m in comfy.model_management.current_loaded_models]
    seen.setdefault("held", []).append(run.held_bytes() if run else None)
    seen["projections_loaded"] = state.projections in loaded


out = comfy.sample.sample(applied, comfy.sample.prepare_noise(latent["samples"], 7), 3, 3.0, "euler", "simple",
                          positive, negative, latent["samples"], callback=callback)
R["held_bytes"] = seen["held"]
R["windows_bytes"] = state.windows.numel() * state.windows.element_size()
R["projections_loaded_during_run"] = seen["projections_loaded"]
R["run_cleared_after"] = state.run is None


def interrupt(step, x0, x_, total):  # what ComfyUI's cancel does: the next check raises inside sampling
    seen["held_when_cancelled"] = state.run.held_bytes() if state.run else None
    comfy.model_management.interrupt_current_processing(True)
    comfy.model_management.throw_exception_if_processing_interrupted()


try:
    comfy.sample.sample(applied, comfy.sample.prepare_noise(latent["samples"], 7), 3, 3.0, "euler", "simple",
                        positive, negative, latent["samples"], callback=interrupt)
    R["cancel_raised"] = False
except comfy.model_management.InterruptProcessingException:
    R["cancel_raised"] = True
R["held_when_cancelled"] = seen.get("held_when_cancelled")
R["run_cleared_after_cancel"] = state.run is None

# --- the expression encoder goes through ComfyUI's model management and is freed by it ---
features = ExpressionFeatures(torch.randn(1, 9, 554, generator=g), None, 25.0)
fp.FantasyPortraitEncode(adapter, features, 0, 0, "trim", 1.0, 1.0, 1.0)
loaded = lambda: [m.model for m in comfy.model_management.current_loaded_models]  # noqa: E731
encoder_patcher = managed.managed_module(adapter, "encoder", None, comfy.model_management.get_torch_device())
R["encoder_managed"] = encoder_patcher.model is adapter.encoder and encoder_patcher in loaded()
comfy.model_management.unload_all_models()
R["encoder_freed"] = encoder_patcher not in loaded()
R["encoder_dtype"] = str(next(adapter.encoder.parameters()).dtype)

# --- context windows: a window's call gets its own frames, with a host's anchor frame first ---
frames = {}
window = types.SimpleNamespace(index_list=[2], causal_anchor_index=1)
wrapper = cw._diffusion_model_wrapper(state)


def capture(x_, t_, c_, clip_fea, tdc, topts, **kw):
    frames["anchored"] = topts["fantasyportrait"].frames


class Exec:
    class_obj = dm

    def __call__(self, *a, **k):
        return capture(*a, **k)


wrapper(Exec(), torch.zeros(1, 36, 2, 8, 10), torch.zeros(1), ctx[:1], None, None, {"context_window": window})
R["anchored_window_frames"] = frames["anchored"]
R["window_mismatch_error"] = error_of(lambda: wrapper(Exec(), torch.zeros(1, 36, 3, 8, 10), torch.zeros(1), ctx[:1],
                                                      None, None, {"context_window": window}))
print("RESULT " + json.dumps(R))
