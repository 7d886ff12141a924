"""The setups users run beside the portrait (issue 23), in a real ComfyUI in this process (run by
tests/test_in_host.py with the host's Python): a LoRA on the Wan model before or after FantasyPortrait Apply, and
fp8 weights."""

import os

import pytest

from comfy_inproc import apply, fp_sampler, ksampler, max_diff, rel
from inproc_fixtures import H  # noqa: F401 (fixture)


def lora_for(H, layout):
    """A LoRA on the tiny Wan's blocks in ``layout`` (tests/comfy_models.py ``wan_lora``)."""
    from comfy_models import wan_lora

    lora = wan_lora(H.model.model.diffusion_model.state_dict(), layout=layout)
    assert len(lora) > 30
    return lora


@pytest.mark.parametrize("layout", ["generic", "lightx2v"])
def test_a_lora_gives_the_same_result_before_and_after_apply(H, layout):
    """LoRA -> Apply and Apply -> LoRA sample the same latent (the patch runs the host's own block, so the LoRA's
    weight patches apply either way); the LoRA changes the result; with distill settings (4 steps, cfg 1,
    portrait_cfg 1: no extra pass) the run is finite. Every key of the file is loaded (none left over)."""
    import comfy.lora
    import comfy.sd

    lora = lora_for(H, layout)
    patches = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(H.model.model, {}), log_missing=False)
    suffixes = (".lora_down.weight", ".diff", ".diff_b")
    assert len(patches) == sum(k.endswith(suffixes) for k in lora)  # one patch per down/up pair and per difference
    before = apply(H, comfy.sd.load_lora_for_models(H.model, None, lora, 1.0, 0)[0])
    after = comfy.sd.load_lora_for_models(apply(H, H.model), None, lora, 1.0, 0)[0]
    with_lora = ksampler(H, before)
    assert max_diff(with_lora, ksampler(H, after)) == 0.0
    assert rel(with_lora, ksampler(H, apply(H, H.model))) > 1e-3  # the LoRA acts
    fast = fp_sampler(H, before, cfg=1.0, portrait_cfg=1.0)
    assert bool(H.torch.isfinite(fast).all())


def test_fp8_weights_run_with_the_portrait(H):
    """The tiny Wan stored in fp8 (e4m3fn, as the fp8 files and UNETLoader's weight_dtype make it): strength 0 is
    exactly the stock sampler on that model, and with the portrait the latent is within the model's own fp8
    rounding of the full-precision run."""
    import comfy.sd
    import torch

    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    model8 = comfy.sd.load_diffusion_model(os.path.join(H.tmp, "tiny_wan_i2v.safetensors"),
                                           model_options={"dtype": torch.float8_e4m3fn})
    weights = {p.dtype for p in model8.model.diffusion_model.blocks.parameters()}
    assert torch.float8_e4m3fn in weights
    assert torch.equal(fp_sampler(H, model8, 3.0, 1.0, strength=0.0), ksampler(H, model8))
    stock8, stock32 = ksampler(H, model8), ksampler(H, H.model)
    on8, on32 = ksampler(H, apply(H, model8)), ksampler(H, apply(H, H.model))
    assert bool(torch.isfinite(on8).all())
    assert rel(on8, stock8) > 1e-3  # the portrait acts on fp8 weights
    # the portrait adds no rounding of its own: its fp8 run is as far from fp32 as the stock model's (0.066 vs 0.067)
    assert rel(on8, on32) < 1.25 * rel(stock8, stock32)


def test_fp8_scaled_files_run_with_the_portrait(H, tmp_path):
    """The tiny Wan as an ``*_fp8_scaled`` file (Comfy-Org's format: every linear weight in e4m3fn with a per-tensor
    ``scale_weight``, and a ``scaled_fp8`` marker): ComfyUI loads it with its scaled-fp8 layers; strength 0 is exactly
    the stock sampler on it, and the portrait adds no error beyond the file's own rounding."""
    import comfy.sd
    import torch
    from safetensors.torch import load_file, save_file

    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    scaled = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for name, weight in load_file(os.path.join(H.tmp, "tiny_wan_i2v.safetensors")).items():
        if name.endswith(".weight") and weight.ndim == 2:
            scale = weight.abs().max().float() / 448.0  # e4m3fn's largest value
            scaled[name] = (weight.float() / scale).to(torch.float8_e4m3fn)
            scaled[name[:-len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            scaled[name] = weight
    path = str(tmp_path / "tiny_wan_i2v_fp8_scaled.safetensors")
    save_file(scaled, path)
    model = comfy.sd.load_diffusion_model(path)
    q = model.model.diffusion_model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn and float(q.scale_weight) != 1.0  # loaded as scaled fp8
    assert torch.equal(fp_sampler(H, model, 3.0, 1.0, strength=0.0), ksampler(H, model))
    stock, on = ksampler(H, model), ksampler(H, apply(H, model))
    assert bool(torch.isfinite(on).all()) and rel(on, stock) > 1e-3
    assert rel(on, ksampler(H, apply(H, H.model))) < 1.25 * rel(stock, ksampler(H, H.model))
