"""Tiny random models in ComfyUI's key layouts, for tests that run inside a real ComfyUI's Python.

``python tests/comfy_models.py COMFYUI_DIR BASE_DIR`` fills BASE_DIR/models for an end-to-end run:
a tiny native Wan 2.1 I2V model, a random full-size Wan 2.1 VAE, a tiny FantasyPortrait adapter, a
random PD-FGC encoder and the real face models (linked from the shared models folder).
"""

import os
import sys

import torch


def _fill(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in shapes.items():
        fan_in = int(torch.tensor(v.shape[1:]).prod()) if v.ndim > 1 else v.shape[-1]
        if ("norm" in k and k.endswith("weight")) or k.endswith("gamma"):
            sd[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("bias"):
            sd[k] = 0.02 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = torch.randn(v.shape, generator=g) / max(fan_in, 1) ** 0.5
    return sd


def write_tiny_wan(path, seed=0, model_type="i2v", in_dim=36):
    """Wan 2.1 I2V, dim 256 (2 heads of 128), 2 blocks: detected by ComfyUI as a native I2V model.
    ``model_type="t2v"`` drops the CLIP-image parts: with ``in_dim=16`` a Wan 2.1 T2V model, with 36 the
    structure of Wan 2.2 A14B I2V."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = WanModel(model_type=model_type, dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=in_dim, out_dim=16,
                          operations=comfy.ops.disable_weight_init).state_dict()
    save_file(_fill(shapes, seed), path)
    return path


def wan_vae_state(seed=0):
    """The Wan 2.1 VAE has fixed dims: a random full-size one (bf16, about 250 MB), as a state dict."""
    from comfy.ldm.wan.vae import WanVAE

    with torch.device("meta"):
        shapes = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True]).state_dict()
    return {k: v.to(torch.bfloat16).contiguous() for k, v in _fill(shapes, seed).items()}


def write_wan_vae(path, seed=0):
    """:func:`wan_vae_state` as a file."""
    from safetensors.torch import save_file

    save_file(wan_vae_state(seed), path)
    return path


LIGHTX2V_LORA = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"  # the name the fast workflow uses


def wan_lora(state, rank=4, seed=11, layout="generic"):
    """A LoRA for every block weight of a Wan state dict (native keys, ``blocks.*``). ``generic``: the key layout
    ComfyUI loads for Wan (``diffusion_model.<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``);
    ``lightx2v``: the layout of lightx2v's step/cfg-distill LoRAs for Wan 2.1 I2V (the files Kijai/WanVideo_comfy
    ships as ``Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank*_bf16.safetensors``, made by LightX2V's
    extractor): down/up pairs without ``.alpha`` for the 2-D weights, whole-tensor differences for the rest, ``.diff``
    for weights (norms) and ``.diff_b`` for biases."""
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name, tensor in state.items():
        if not name.startswith("blocks.") or name.endswith(".modulation"):
            continue
        key = f"diffusion_model.{name.rsplit('.', 1)[0]}"
        if name.endswith(".weight") and tensor.ndim == 2:
            lora[f"{key}.lora_down.weight"] = torch.randn(rank, tensor.shape[1], generator=g) * 0.05
            lora[f"{key}.lora_up.weight"] = torch.randn(tensor.shape[0], rank, generator=g) * 0.05
            if layout == "generic":
                lora[f"{key}.alpha"] = torch.tensor(float(rank))
        elif layout == "lightx2v":
            suffix = ".diff_b" if name.endswith(".bias") else ".diff"  # biases, and norm weights
            lora[key + suffix] = torch.randn(tensor.shape, generator=g) * 0.01
    return lora


def main(comfy_dir, base, shared_models, repo):
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.path.insert(0, os.path.join(repo, "tests"))
    from checkpoint_factory import adapter_state_dict, save_ckpt
    from motion_weights import motion_state

    models = os.path.join(base, "models")
    for sub in ("diffusion_models", "vae", "fantasyportrait", "text_encoders", "clip_vision", "loras"):
        os.makedirs(os.path.join(models, sub), exist_ok=True)
    # stand-ins for umT5-XXL and CLIP-H (comfy_test_nodes makes the stock loaders return small encoders)
    for sub, name in (("text_encoders", "fp_test_umt5.safetensors"), ("clip_vision", "fp_test_clip_h.safetensors")):
        with open(os.path.join(models, sub, name), "wb") as fh:
            fh.write(b"stand-in")
    write_tiny_wan(os.path.join(models, "diffusion_models", "tiny_wan_i2v.safetensors"))
    from safetensors.torch import load_file, save_file

    tiny = load_file(os.path.join(models, "diffusion_models", "tiny_wan_i2v.safetensors"))
    save_file(wan_lora(tiny, layout="lightx2v"), os.path.join(models, "loras", LIGHTX2V_LORA))
    write_wan_vae(os.path.join(models, "vae", "wan_2.1_vae.safetensors"))
    save_ckpt(os.path.join(models, "fantasyportrait", "fantasyportrait_model.ckpt"),
              adapter_state_dict(model_dim=256, blocks=2, seed=3))
    torch.save(motion_state(), os.path.join(models, "fantasyportrait", "pd_fpg.pth"))
    for name in ("face_det.onnx", "face_landmark.onnx"):
        dst = os.path.join(models, "fantasyportrait", name)
        if not os.path.exists(dst):
            os.symlink(os.path.join(shared_models, name), dst)


if __name__ == "__main__":
    main(*sys.argv[1:5])
