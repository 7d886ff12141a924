"""The portrait patch composed the way ComfyUI users compose it, in a real ComfyUI in this process (run by
tests/test_in_host.py with the host's Python): Apply before the Sampler, clones, other model patches, other
guidance patches, wrong inputs, model management, cancelling."""

import dataclasses
import logging
import os
import types

import pytest

from inproc_fixtures import H, error_of  # noqa: F401 (fixture)
from comfy_inproc import apply, block_inputs, call_block_patch, custom, fp_sampler, ksampler, max_diff, rel


@pytest.fixture(scope="module")
def applied(H):
    return apply(H, H.model)


@pytest.fixture(scope="module")
def state(H, applied):
    return H.wan_patch.portrait_state(applied)


def guider(H, m, cfg, pcfg, pos=None, neg=None):
    return H.fp.FantasyPortraitGuider(m, pos or H.positive, neg or H.negative, cfg, pcfg)[0]


def test_applying_again_replaces_the_portrait(H, applied):
    assert rel(ksampler(H, applied), ksampler(H, H.model)) > 0.01
    assert max_diff(fp_sampler(H, applied), fp_sampler(H, H.model)) == 0.0  # Apply -> Sampler == Sampler alone
    assert max_diff(ksampler(H, apply(H, apply(H, H.model, strength=0.3))), ksampler(H, applied)) == 0.0


def test_clones_share_the_adapter_and_its_state(H, applied, state):
    clones = [applied.clone() for _ in range(10)]
    assert all(H.wan_patch.portrait_state(c) is state for c in clones)
    pointers = {p.data_ptr() for c in clones for p in H.wan_patch.portrait_state(c).projections.model.parameters()}
    # 10 clones, still one k and one v tensor per block of the 2-block adapter
    assert len(pointers) == len(list(state.projections.model.parameters())) == 4
    assert max_diff(ksampler(H, clones[-1]), ksampler(H, applied)) == 0.0


def test_embeds_and_mask_are_checked_against_the_latent_on_every_path(H, applied):
    torch = H.torch
    long_latent = {"samples": torch.zeros(1, 16, 6, 8, 10)}  # 21 frames; the embeds cover 9
    for message in (error_of(lambda: ksampler(H, applied, latent=long_latent)),
                    error_of(lambda: fp_sampler(H, H.model, latent=long_latent)),
                    error_of(lambda: custom(guider(H, applied, 3.0, 4.0), long_latent))):
        assert "cover 9 frames (3 latent frames)" in message and "6 latent frames (21 frames)" in message, message
        assert "WanImageToVideo's length to 9" in message
    # a mask built for 64 wide x 80 high on an 80 x 64 latent: same token count (20), transposed regions
    mask = torch.ones(3, 20, H.portrait.expression.windows.shape[2], dtype=torch.bool)
    transposed = dataclasses.replace(H.portrait, mask=mask, size=(64, 80))
    message = error_of(lambda: ksampler(H, apply(H, H.model, portrait=transposed)))
    assert "made for 64x80" in message and "80x64" in message
    right = dataclasses.replace(transposed, size=(80, 64))
    assert error_of(lambda: ksampler(H, apply(H, H.model, portrait=right), steps=1)) is None


def test_the_hosts_own_block_runs_with_the_portrait(H, state):
    dm = H.model.model.diffusion_model
    x, e, freqs, ctx = block_inputs(H)
    patch = H.wan_patch.PortraitBlockPatch(1, state)
    base = call_block_patch(patch, dm, x, e, freqs, ctx)
    block_cls = type(dm.blocks[1])
    original_forward = block_cls.forward
    block_cls.forward = lambda self, *a, **k: original_forward(self, *a, **k) * 2 + 1  # a newer host's block
    try:
        changed = call_block_patch(patch, dm, x, e, freqs, ctx)
    finally:
        block_cls.forward = original_forward
    assert rel(changed, 2 * base + 1) < 1e-6  # a wrapped WanAttentionBlock.forward still acts
    handle = dm.blocks[1].ffn.register_forward_hook(lambda mod, inp, out: out + 0.25)  # a hook inside the block
    try:
        hooked = call_block_patch(patch, dm, x, e, freqs, ctx)
    finally:
        handle.remove()
    assert rel(hooked, base) > 1e-3
    assert len(dm.blocks[1].cross_attn.norm_q._forward_hooks) == 0  # the patch's hooks are gone after the call
    assert len(dm.blocks[1].cross_attn.o._forward_pre_hooks) == 0


def test_only_wan_i2v_models_are_accepted(H, caplog):
    import comfy.sd
    import torch

    t2v = comfy.sd.load_diffusion_model(H.write_tiny_wan(os.path.join(H.tmp, "t2v.safetensors"), model_type="t2v",
                                                         in_dim=16))
    message = error_of(lambda: apply(H, t2v))
    assert "text-to-video" in message and "16 input channels" in message
    wan22 = comfy.sd.load_diffusion_model(H.write_tiny_wan(os.path.join(H.tmp, "i2v22.safetensors"),
                                                           model_type="t2v"))
    with caplog.at_level(logging.WARNING, logger="FantasyPortrait"):
        assert error_of(lambda: apply(H, wan22)) is None  # structurally compatible: runs, with a warning
    assert "not Wan 2.1 I2V 14B" in caplog.text and "Wan 2.2" in caplog.text
    message = error_of(lambda: H.wan_patch.check_wan_model(types.SimpleNamespace(
        get_model_object=lambda name: torch.nn.Identity()), H.adapter))
    assert "needs a Wan 2.1 I2V 14B model" in message


def one_step(g_, H):
    return custom(g_, H.latent, steps=1)  # euler, one step to sigma 0: the latent is the guider's prediction


def test_guidance_formulas_against_separate_model_calls(H, applied):
    import comfy.samplers

    from fantasyportrait_pack.nodes import guidance

    def single_pass(on, cond):
        g_ = comfy.samplers.CFGGuider(applied)
        g_.set_conds(guidance.with_portrait(cond, on), H.negative)
        g_.set_cfg(1.0)
        return one_step(g_, H)

    pos_on, pos_off, neg_off = single_pass(True, H.positive), single_pass(False, H.positive), \
        single_pass(False, H.negative)
    three = one_step(guider(H, applied, 3.0, 4.0), H)
    two = one_step(guider(H, applied, 1.0, 4.0), H)
    assert rel(three, neg_off + 3.0 * (pos_off - neg_off) + 4.0 * (pos_on - pos_off)) < 1e-5
    assert rel(two, pos_off + 4.0 * (pos_on - pos_off)) < 1e-5
    assert rel(three, neg_off + 3.0 * (pos_on - neg_off)) > 1e-2  # not the same as plain CFG
    # portrait_cfg <= 1: plain CFG with the portrait in both passes (released), = Apply + KSampler
    assert max_diff(custom(guider(H, applied, 3.0, 0.5), H.latent), ksampler(H, applied)) < 1e-6
    # the order of set-up does not matter
    by_node = H.fp.FantasyPortraitGuider(applied, H.positive, H.negative, 3.0, 4.0)[0]
    by_hand = guidance.PortraitGuider(applied)
    by_hand.set_conds(H.positive, H.negative)
    by_hand.set_cfg(3.0, 4.0)
    assert max_diff(custom(by_node, H.latent), custom(by_hand, H.latent)) == 0.0
    assert "carries no portrait" in error_of(lambda: guider(H, H.model, 3.0, 4.0))


def test_other_guidance_patches_still_apply(H, applied):
    from comfy_extras.nodes_model_advanced import RescaleCFG

    calls = []
    with_post = applied.clone()
    with_post.set_model_sampler_post_cfg_function(lambda a: (calls.append(a["cond_scale"]), a["denoised"] * 0.5)[1])
    for cfg, pcfg in ((3.0, 4.0), (1.0, 4.0)):
        assert rel(one_step(guider(H, with_post, cfg, pcfg), H), one_step(guider(H, applied, cfg, pcfg), H)) > 0.05
    assert sorted(set(calls)) == [3.0, 4.0]  # text scale (3 passes), portrait scale (2 passes)
    rescaled = RescaleCFG().patch(applied, 0.7)[0]
    assert rel(custom(guider(H, rescaled, 3.0, 4.0), H.latent), custom(guider(H, applied, 3.0, 4.0), H.latent)) > 1e-3


def test_percent_window_follows_the_model_sampling_at_sampling_time(H):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    def shift(m):
        return ModelSamplingSD3().patch(m, 5.0)[0]

    before = ksampler(H, apply(H, shift(H.model), start=0.3, end=0.7))
    after = ksampler(H, shift(apply(H, H.model, start=0.3, end=0.7)))
    assert max_diff(after, before) == 0.0
    assert rel(before, ksampler(H, apply(H, shift(H.model)))) > 1e-3


def test_non_finite_numbers_are_refused(H, applied):
    assert "portrait_strength is nan" in error_of(lambda: apply(H, H.model, strength=float("nan")))
    assert "portrait_cfg is inf" in error_of(lambda: guider(H, applied, 3.0, float("inf")))


def test_memory_held_between_block_calls_and_model_management(H, applied, state):
    import comfy.model_management
    import comfy.sample

    seen = {"held": []}

    def callback(step, x0, x_, total):
        loaded = [m.model for m in comfy.model_management.current_loaded_models]
        seen["held"].append(state.run.held_bytes() if state.run else None)
        seen["projections_loaded"] = state.projections in loaded

    latent = H.latent["samples"]
    comfy.sample.sample(applied, comfy.sample.prepare_noise(latent, 7), 3, 3.0, "euler", "simple", H.positive,
                        H.negative, latent, callback=callback)
    windows_bytes = state.windows.numel() * state.windows.element_size()
    assert seen["held"] == [windows_bytes] * 3  # between block calls only the token windows stay (no K/V)
    assert seen["projections_loaded"]  # the K/V weights are declared to ComfyUI
    assert state.run is None


def test_a_cancelled_run_frees_its_per_run_tensors(H, applied, state):
    """Cancelled at the first step, while the run held its windows: nothing of the run is kept afterwards."""
    import comfy.model_management
    import comfy.sample

    seen = {}

    def interrupt(step, x0, x_, total):  # what ComfyUI's cancel does: the next check raises inside sampling
        seen["held"] = state.run.held_bytes() if state.run else None
        comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    latent = H.latent["samples"]
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        comfy.sample.sample(applied, comfy.sample.prepare_noise(latent, 7), 3, 3.0, "euler", "simple", H.positive,
                            H.negative, latent, callback=interrupt)
    assert seen["held"] == state.windows.numel() * state.windows.element_size()
    assert state.run is None


def test_the_expression_encoder_is_managed_and_freed_by_comfyui(H):
    import comfy.model_management

    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures
    from fantasyportrait_pack.nodes import managed

    features = ExpressionFeatures(H.torch.randn(1, 9, 554, generator=H.g), None, 25.0)
    H.fp.FantasyPortraitEncode(H.adapter, features, 0, 0, "trim", 1.0, 1.0, 1.0)
    patcher = managed.managed_module(H.adapter, "encoder", None, comfy.model_management.get_torch_device())
    assert patcher.model is H.adapter.encoder
    assert patcher in [m.model for m in comfy.model_management.current_loaded_models]
    comfy.model_management.unload_all_models()
    assert patcher not in [m.model for m in comfy.model_management.current_loaded_models]
    assert str(next(H.adapter.encoder.parameters()).dtype) == "torch.float32"


def test_context_window_calls_get_their_frames_with_the_anchor(H, state):
    torch = H.torch
    dm = H.model.model.diffusion_model
    window = types.SimpleNamespace(index_list=[2], causal_anchor_index=1)
    wrapper = H.wan_patch._diffusion_model_wrapper(state)
    seen = {}

    class Exec:
        class_obj = dm

        def __call__(self, x_, t_, c_, clip_fea, tdc, topts, **kw):
            seen["frames"] = topts["fantasyportrait"].frames

    ctx = torch.zeros(1, 12, 256)
    wrapper(Exec(), torch.zeros(1, 36, 2, 8, 10), torch.zeros(1), ctx, None, None, {"context_window": window})
    assert seen["frames"] == [1, 2]
    message = error_of(lambda: wrapper(Exec(), torch.zeros(1, 36, 3, 8, 10), torch.zeros(1), ctx, None, None,
                                       {"context_window": window}))
    assert "covers 2 latent frames but its model call has 3" in message
