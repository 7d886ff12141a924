"""Random Wan 2.1 I2V models for the GPU benchmarks, built in-process in a real ComfyUI (no files)."""

import torch

FULL = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)  # Wan 2.1 I2V 14B
TINY = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2)


def random_wan(shape: dict, seed: int = 0, dtype=torch.bfloat16, weight_dtype=None):
    """A native Wan 2.1 I2V ModelPatcher of ``shape`` (FULL or TINY) with fan-in scaled random weights (norm
    weights 1), through ComfyUI's own loader (``weight_dtype``: its weight dtype option, e.g. fp8). The weights
    are drawn on the GPU when there is one (14B of them take minutes on a CPU)."""
    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        shapes = WanModel(model_type="i2v", in_dim=36, out_dim=16, operations=comfy.ops.disable_weight_init,
                          **shape).state_dict()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device).manual_seed(seed)
    sd = {}
    for k, v in shapes.items():
        fan_in = max(int(torch.tensor(v.shape[1:]).prod()) if v.ndim > 1 else v.shape[-1], 1)
        t = torch.empty(v.shape, dtype=dtype, device=device)
        if "norm" in k and k.endswith("weight"):
            t.fill_(1.0)
        else:
            t.normal_(0, fan_in ** -0.5 if not k.endswith("bias") else 0.02, generator=g)
        sd[k] = t.cpu()
    options = {"dtype": weight_dtype} if weight_dtype is not None else {}
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options=options)


def random_wan_vae(seed: int = 0):
    """A random full-size Wan 2.1 VAE (its dims are fixed; the tests' own, tests/comfy_models.py), as ComfyUI's VAE
    object."""
    import comfy.sd
    from comfy_models import wan_vae_state

    return comfy.sd.VAE(sd=wan_vae_state(seed))
