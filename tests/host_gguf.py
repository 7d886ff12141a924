"""GGUF models (issue 23) in a real ComfyUI in this process (run by tests/test_in_host.py with the host's Python): the
tiny Wan 2.1 I2V written as GGUF (Q8_0, and the K-quant Q6_K) and loaded by city96's ComfyUI-GGUF (the shared
archive, unpacked as into custom_nodes): the portrait runs on it, strength 0 is the stock sampler on that model, and
the portrait's result is as far from the full-precision one as the quantisation makes the stock model's."""

import os

import pytest

from comfy_inproc import REPO, apply, fp_sampler, ksampler, rel
from gguf_models import gguf_pack_archive, import_gguf_pack, quantize_q6_k, write_wan_gguf
from inproc_fixtures import H  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def G(H, tmp_path_factory):
    """The two GGUF models, loaded through ComfyUI-GGUF's Unet Loader (GGUF)."""
    archive = gguf_pack_archive(REPO)
    if archive is None:
        pytest.skip("the ComfyUI-GGUF archive (../shared/host/comfyui-gguf-*.tar.gz) is not there")
    pytest.importorskip("gguf", reason="ComfyUI-GGUF needs the gguf package (requirements-dev.txt)")
    import folder_paths
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("gguf")
    gguf_nodes = import_gguf_pack(archive, str(folder / "custom_nodes"))
    models = folder / "diffusion_models"
    models.mkdir()
    folder_paths.add_model_folder_path("diffusion_models", str(models))
    state = load_file(os.path.join(H.tmp, "tiny_wan_i2v.safetensors"))
    loaded = {}
    for qtype in ("Q8_0", "Q6_K"):
        write_wan_gguf(str(models / f"tiny_wan_{qtype}.gguf"), state, qtype)
        loaded[qtype] = gguf_nodes.UnetLoaderGGUF().load_unet(f"tiny_wan_{qtype}.gguf")[0]
    return loaded


def test_the_k_quant_blocks_are_what_gguf_reads():
    import gguf
    import numpy as np

    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    back = gguf.quants.dequantize(quantize_q6_k(x), gguf.GGMLQuantizationType.Q6_K)
    assert back.shape == x.shape and float(np.abs(back - x).mean()) < 0.025  # 6 bits: about 1/4 of a step


@pytest.mark.parametrize("qtype, tolerance", [("Q8_0", 0.02), ("Q6_K", 0.1)])
def test_the_portrait_runs_on_a_gguf_model_within_its_quantisation_error(H, G, qtype, tolerance):
    model = G[qtype]
    assert type(model).__name__ == "GGUFModelPatcher"
    # strength 0: exactly the stock sampler on the GGUF model (the branch adds nothing, through the GGUF ops)
    assert H.torch.equal(fp_sampler(H, model, cfg=3.0, portrait_cfg=1.0, strength=0.0), ksampler(H, model))
    stock_error = rel(ksampler(H, model), ksampler(H, H.model))
    portrait = fp_sampler(H, model, cfg=3.0, portrait_cfg=4.0)
    reference = fp_sampler(H, H.model, cfg=3.0, portrait_cfg=4.0)
    portrait_error = rel(portrait, reference)
    assert bool(H.torch.isfinite(portrait).all())
    # measured: Q8_0 0.0096 (stock 0.0107), Q6_K 0.035 (stock 0.041) relative after 3 steps
    assert 0 < portrait_error < tolerance and portrait_error < 1.5 * stock_error + 1e-3, (portrait_error, stock_error)
    # the portrait acts on the GGUF model as it does on the full one
    stock = ksampler(H, apply(H, model, strength=0.0))
    assert rel(portrait, stock) > 10 * portrait_error
