"""Cost of the portrait branch in one Wan block at the 14B width, measured side by side.

Runs inside a ComfyUI checkout's Python (the block is ComfyUI's own WanAttentionBlock):

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_wan_step.py [--latent-frames 2] [--dtype bf16]

One block of Wan 2.1 I2V 14B (dim 5120, ffn 13824, 40 heads, 257 CLIP + 512 text tokens) on a
480p latent grid (30 x 52 tokens per latent frame). A real 81-frame 480p step has 21 latent frames
(32,760 tokens) and 40 blocks; on a 2-core CPU one block at that size takes minutes, so the default
runs 2 latent frames (3,120 tokens). The branch's cost grows linearly with the token count, like
the block's linear layers, while self-attention grows quadratically, so the ratio at full size is
at most the one measured here. Per step the 40 blocks are identical, so the ratio is the step's.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent-frames", type=int, default=2)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("set COMFYUI_DIR to a ComfyUI checkout and run this with its Python")
    sys.argv = [sys.argv[0], "--cpu", "--use-pytorch-cross-attention"]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import tempfile

    import torch

    import comfy.model_patcher
    import comfy.ops
    from comfy.ldm.wan.model import WanAttentionBlock

    tmp = tempfile.mkdtemp()
    os.symlink(ROOT, os.path.join(tmp, "fantasyportrait_pack"))
    sys.path.insert(0, tmp)
    from fantasyportrait_pack.fantasyportrait_core.attention import AdapterProjections
    from fantasyportrait_pack.fantasyportrait_core.comfy_wan import PortraitBlockPatch, PortraitState

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    dim, heads, grid = 5120, 40, 30 * 52
    block = WanAttentionBlock("i2v_cross_attn", dim, 13824, heads, cross_attn_norm=True,
                              operation_settings={"operations": comfy.ops.disable_weight_init, "dtype": dtype})
    for p in block.parameters():
        p.data = (torch.randn(p.shape) / max(p.shape[-1], 1) ** 0.5).to(dtype)
    t = args.latent_frames
    x = torch.randn(1, t * grid, dim, dtype=dtype)
    e = torch.randn(1, 6, dim, dtype=dtype) * 0.1
    ctx = torch.randn(1, 257 + 512, dim, dtype=dtype)
    from comfy.ldm.flux.layers import EmbedND

    d = dim // heads
    rope = EmbedND(dim=d, theta=10000.0, axes_dim=[d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)])
    ids = torch.zeros(t, 30, 52, 3)
    ids[..., 0] += torch.arange(t).reshape(-1, 1, 1)
    ids[..., 1] += torch.arange(30).reshape(1, -1, 1)
    ids[..., 2] += torch.arange(52).reshape(1, 1, -1)
    freqs = rope(ids.reshape(1, -1, 3)).movedim(1, 2)

    kv = {0: (torch.randn(dim, 2048, dtype=dtype) * 0.02, torch.randn(dim, 2048, dtype=dtype) * 0.02)}
    projections = comfy.model_patcher.ModelPatcher(AdapterProjections(kv), "cpu", "cpu")
    windows = torch.randn(1, t, 97, 2048)
    state = PortraitState(projections, windows, None, 1.0, 1e9, -1.0, heads)
    patch = PortraitBlockPatch(0, state)
    info = {"scale": None, "context_img_len": 257, "active": True, "diffusion_model": type("DM", (), {"blocks": [block]})}
    state.kv(0, x.device, x.dtype)  # K/V are computed once per run, not per step

    def stock():
        return block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)

    def body_only():  # the patch's block body with a zero branch: the cost of recomputing the body
        from fantasyportrait_pack.fantasyportrait_core.comfy_wan import portrait_block_forward

        return portrait_block_forward(block, x, e, freqs, ctx, 257, {}, lambda q: 0)

    def portrait():
        return patch({"img": x, "txt": ctx, "vec": e, "pe": freqs, "transformer_options": {"fantasyportrait": info}},
                     {"original_block": None})["img"]

    with torch.inference_mode():
        stock(), portrait()  # warm-up
        times = {"stock": [], "body": [], "portrait": []}
        for _ in range(args.repeats):
            for name, fn in (("stock", stock), ("body", body_only), ("portrait", portrait)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    s, b, p = (statistics.median(times[k]) for k in ("stock", "body", "portrait"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, one 14B-width block, "
          f"{t} latent frames x {grid} tokens = {t * grid} tokens")
    print(f"stock block {s:.3f} s, recomputed body without branch {b:.3f} s (ratio {b / s:.4f}), "
          f"with portrait branch {p:.3f} s: ratio {p / s:.4f} (+{100 * (p / s - 1):.2f}%; target <= +5%)")


if __name__ == "__main__":
    main()
