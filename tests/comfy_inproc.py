"""A real ComfyUI in this process, for the host test files (tests/host_*.py) and the Wan benchmarks (run with the
host's Python).

``boot(comfy_dir, repo)`` imports ComfyUI with CPU settings and the pack under a package name, and
returns a namespace with a tiny Wan 2.1 I2V model, WanImageToVideo-like conditioning (with a
CLIP-vision output), a latent, a tiny adapter and 9-frame expression tokens (``expression``) and portrait embeds (``portrait``).
"""

import os
import sys
import tempfile
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NodeCall:
    """A V3 node called as ComfyUI's executor calls it (inputs by name, through ``EXECUTE_NORMALIZED``);
    positional arguments are taken in the schema's input order. Returns the output tuple."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, *args, **kwargs):
        names = [i.id for i in self.cls.GET_SCHEMA().inputs]
        kwargs.update(zip(names, args))
        return self.cls.EXECUTE_NORMALIZED(**kwargs).result


def import_host(comfy_dir: str, repo: str, comfy_args=("--cpu", "--use-pytorch-cross-attention")) -> str:
    """Make a ComfyUI checkout importable in this process with ``comfy_args`` as its command line, and
    this pack importable as package ``fantasyportrait_pack`` (a link in a new temporary folder, which is
    returned). Also used by the Wan benchmarks."""
    if not comfy_dir:
        sys.exit("set COMFYUI_DIR to a ComfyUI checkout and run this with its Python")
    sys.argv = [sys.argv[0], *comfy_args]
    os.chdir(comfy_dir)
    sys.path.insert(0, comfy_dir)
    sys.path.insert(0, os.path.join(repo, "tests"))
    import comfy.options

    comfy.options.enable_args_parsing()
    tmp = tempfile.mkdtemp()
    os.symlink(repo, os.path.join(tmp, "fantasyportrait_pack"))
    sys.path.insert(0, tmp)
    return tmp


def boot(comfy_dir: str, repo: str) -> types.SimpleNamespace:
    tmp = import_host(comfy_dir, repo)
    import torch

    import comfy.sd

    torch.set_grad_enabled(False)
    import fantasyportrait_pack
    from checkpoint_factory import adapter_state_dict, flatten
    from comfy_models import write_tiny_wan
    from fantasyportrait_pack.fantasyportrait_core import adapter_from_state_dict
    from fantasyportrait_pack.fantasyportrait_core.branch.embeds import PortraitEmbeds
    from fantasyportrait_pack.nodes import wan_patch
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_pack.nodes import NODES

    fp = types.SimpleNamespace(**{node.__name__: NodeCall(node) for node in NODES})  # every node by its id

    model = comfy.sd.load_diffusion_model(write_tiny_wan(os.path.join(tmp, "tiny_wan_i2v.safetensors")))

    class ClipOut:  # as a CLIP-vision output: 257 image tokens
        penultimate_hidden_states = torch.randn(1, 257, 1280)

    g = torch.Generator().manual_seed(1)
    image = {"concat_latent_image": torch.randn(1, 16, 3, 8, 10, generator=g), "clip_vision_output": ClipOut()}
    positive = [[torch.randn(1, 12, 4096, generator=g), dict(image)]]
    negative = [[torch.randn(1, 12, 4096, generator=g), dict(image)]]
    adapter = adapter_from_state_dict(flatten(adapter_state_dict(model_dim=256, blocks=2, seed=3)))
    expression = encode_features(adapter.encoder, torch.randn(1, 9, 554, generator=g))
    return types.SimpleNamespace(
        torch=torch, tmp=tmp, pack=fantasyportrait_pack, fp=fp, wan_patch=wan_patch, model=model, g=g,
        positive=positive, negative=negative, latent={"samples": torch.zeros(1, 16, 3, 8, 10)}, adapter=adapter,
        expression=expression, portrait=PortraitEmbeds(expression), write_tiny_wan=write_tiny_wan)


def call_block_patch(patch, dm, x, e, freqs, ctx, frames=None, context_img_len=257):
    """Call a portrait block patch as WanModel.forward_orig does (the host's block as original_block)."""
    from fantasyportrait_pack.nodes.wan_patch import prepare_call

    block = dm.blocks[patch.index]
    call = prepare_call(patch.state, patch.state.current_run(), x.shape[0], x.device, dm, frames=frames)

    def original_block(args):
        return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"],
                             context_img_len=context_img_len, transformer_options=args["transformer_options"])}

    args = {"img": x, "txt": ctx, "vec": e, "pe": freqs, "transformer_options": {"fantasyportrait": call}}
    return patch(args, {"original_block": original_block})["img"]


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def ksampler(H, m, cfg=3.0, latent=None, steps=3, positive=None, negative=None):
    """The stock KSampler on MODEL ``m`` (seed 7, euler, simple): the latent samples."""
    import nodes

    return nodes.common_ksampler(m, 7, steps, cfg, "euler", "simple", positive or H.positive, negative or H.negative,
                                 latent or H.latent)[0]["samples"]


def fp_sampler(H, m, cfg=3.0, portrait_cfg=4.0, strength=1.0, start=0.0, end=1.0, portrait=None, latent=None):
    """FantasyPortrait Sampler on MODEL ``m`` with the same seed, steps and sampler as :func:`ksampler`."""
    return H.fp.FantasyPortraitSampler(m, H.adapter, portrait or H.portrait, strength, start, end, H.positive,
                                       H.negative, latent or H.latent, 7, 3, cfg, portrait_cfg, "euler", "simple",
                                       1.0)[0]["samples"]


def apply(H, m, strength=1.0, start=0.0, end=1.0, portrait=None):
    """FantasyPortrait Apply on MODEL ``m``."""
    return H.fp.FantasyPortraitApply(m, H.adapter, portrait or H.portrait, strength, start, end)[0]


def custom(guider, latent, steps=3):
    """SamplerCustomAdvanced with ``guider`` (seed 7, euler, simple sigmas of ``steps``)."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced

    class Noise:
        seed = 7

        def generate_noise(self, lat):
            return comfy.sample.prepare_noise(lat["samples"], self.seed)

    sigmas = comfy.samplers.KSampler(guider.model_patcher, steps=steps, device="cpu", sampler="euler",
                                     scheduler="simple").sigmas
    out = SamplerCustomAdvanced().sample(Noise(), guider, comfy.samplers.sampler_object("euler"), sigmas, latent)
    return (out.result if hasattr(out, "result") else out)[0]["samples"]


def block_inputs(H, frames=3):
    """Inputs of one Wan block call of the tiny model (batch 2, ``frames`` latent frames of 4 x 5 tokens):
    x, e, rope freqs and context (257 CLIP-image + 12 text tokens)."""
    torch, g, dm = H.torch, H.g, H.model.model.diffusion_model
    x = torch.randn(2, frames * 20, 256, generator=g)
    e = torch.randn(2, 6, 256, generator=g)
    ctx = torch.randn(2, 257 + 12, 256, generator=g)
    return x, e, dm.rope_encode(frames, 8, 10, device=x.device, dtype=x.dtype), ctx
