"""Cost of the portrait branch in one Wan block at the 14B width, measured side by side.

Runs inside a ComfyUI checkout's Python (the block is ComfyUI's own WanAttentionBlock):

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_wan_step.py [--latent-frames 2] [--dtype bf16]

Two figures, for 1 and 3 people:

* **bytes held between steps**: what the branch keeps on the compute device between block calls
  (token windows, multi-person mask, per-token strengths) for a real 81-frame 480p run (21 latent
  frames x 1,560 tokens), beside what keeping every block's window K/V for the whole run would
  cost (the pack's earlier design). The projection weights are not counted: they are a model that
  ComfyUI loads and counts.
* **per-block time**: ComfyUI's block alone vs the same block through the portrait patch (host
  block + hooks + K/V projected per call + adapter attention). A real step has 21 latent frames
  and 40 blocks; on a 2-core CPU one block at that size takes minutes, so the default runs 2 latent
  frames of the 480p grid (3,120 tokens). The branch grows linearly with the frames, like the
  block's linear layers, while self-attention grows quadratically, so the ratio at 21 latent frames
  is at most the one measured here.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, HEADS, FFN, ROWS, COLS, TOKEN_DIM, WINDOW = 5120, 40, 13824, 30, 52, 2048, 97


def person_layout(persons, torch):
    """Token labels of a 480p frame with ``persons`` side-by-side face regions (0 = background)."""
    labels = torch.zeros(ROWS, COLS, dtype=torch.long)
    width = COLS // (persons + 1)
    for i in range(persons):
        labels[8:22, (i + 1) * width - 6:(i + 1) * width + 6] = i + 1
    return labels.reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent-frames", type=int, default=2, help="latent frames timed (21 = a real 81-frame run)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-only", action="store_true", help="print the held bytes and skip the timing")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from comfy_inproc import import_host

    import_host(os.environ.get("COMFYUI_DIR"), ROOT)
    import torch

    import comfy.model_patcher
    import comfy.ops
    from comfy.ldm.wan.model import WanAttentionBlock

    from fantasyportrait_pack.fantasyportrait_core.branch.attention import AdapterProjections
    from fantasyportrait_pack.nodes.wan_patch import PortraitBlockPatch, PortraitState, prepare_call
    from fantasyportrait_pack.fantasyportrait_core.branch.multi import build_mask, query_scales

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    grid = ROWS * COLS
    block = WanAttentionBlock("i2v_cross_attn", DIM, FFN, HEADS, cross_attn_norm=True,
                              operation_settings={"operations": comfy.ops.disable_weight_init, "dtype": dtype})
    for p in block.parameters():
        p.data = (torch.randn(p.shape) / max(p.shape[-1], 1) ** 0.5).to(dtype)
    kv = {0: (torch.randn(DIM, TOKEN_DIM, dtype=dtype) * 0.02, torch.randn(DIM, TOKEN_DIM, dtype=dtype) * 0.02)}
    projections = comfy.model_patcher.ModelPatcher(AdapterProjections(kv), "cpu", "cpu")

    def state_for(persons, latent_frames):
        windows = torch.randn(1, latent_frames, WINDOW * persons, TOKEN_DIM)
        mask = scale = None
        if persons > 1:
            labels = person_layout(persons, torch)
            mask = build_mask(labels, persons, WINDOW, latent_frames)
            scale = query_scales(labels, [1.0] * persons)
        return PortraitState(projections, windows, mask, 1.0, 0.0, 1.0, HEADS, query_scale=scale)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, Wan 2.1 14B block width")
    print("bytes the branch keeps on the device between block calls, 81 frames (21 latent frames) at 480p:")
    for persons in (1, 3):
        run = state_for(persons, 21).current_run()
        run.windows("cpu", dtype), run.mask("cpu"), run.query_scale("cpu")
        per_block_kv = 2 * 21 * WINDOW * persons * DIM * torch.finfo(dtype).bits // 8
        print(f"  {persons} person(s): {run.held_bytes() / 2**20:.1f} MiB (goal < 64 MiB); keeping window K/V of "
              f"all 40 blocks would hold {40 * per_block_kv / 2**30:.2f} GiB")

    if args.memory_only:
        return
    t = args.latent_frames
    x = torch.randn(1, t * grid, DIM, dtype=dtype)
    e = torch.randn(1, 6, DIM, dtype=dtype) * 0.1
    ctx = torch.randn(1, 257 + 512, DIM, dtype=dtype)
    from comfy.ldm.flux.layers import EmbedND

    d = DIM // HEADS
    rope = EmbedND(dim=d, theta=10000.0, axes_dim=[d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)])
    ids = torch.zeros(t, ROWS, COLS, 3)
    ids[..., 0] += torch.arange(t).reshape(-1, 1, 1)
    ids[..., 1] += torch.arange(ROWS).reshape(1, -1, 1)
    ids[..., 2] += torch.arange(COLS).reshape(1, 1, -1)
    freqs = rope(ids.reshape(1, -1, 3)).movedim(1, 2)
    dm = type("DM", (), {"blocks": [block]})

    def stock():
        return block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)

    def original_block(a):
        return {"img": block(a["img"], context=a["txt"], e=a["vec"], freqs=a["pe"], context_img_len=257,
                             transformer_options=a["transformer_options"])}

    def portrait(state):
        patch = PortraitBlockPatch(0, state)
        info = prepare_call(state, state.current_run(), x.shape[0], x.device, dm)

        def call():
            return patch({"img": x, "txt": ctx, "vec": e, "pe": freqs,
                          "transformer_options": {"fantasyportrait": info}}, {"original_block": original_block})
        return call

    def branch_only(state):  # the extra work alone: K/V projection + adapter attention for one block call
        from fantasyportrait_pack.fantasyportrait_core.branch.attention import adapter_cross_attention

        run = state.current_run()
        q = torch.randn(1, t * grid, DIM, dtype=dtype)

        def call():
            k, v = run.kv(0, None, q.device, q.dtype)
            return adapter_cross_attention(q, k, v, HEADS, 1.0, run.mask(q.device), run.query_scale(q.device))
        return call

    states = {1: state_for(1, t), 3: state_for(3, t)}
    runs = {"stock": stock, "1 person": portrait(states[1]), "3 persons": portrait(states[3]),
            "branch 1": branch_only(states[1]), "branch 3": branch_only(states[3])}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():  # interleaved, so drift hits every variant alike
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    s = statistics.median(times["stock"])
    print(f"per-block time, {t} latent frames x {grid} tokens = {t * grid} tokens, median of {args.repeats}:")
    print(f"  stock block {s:.3f} s")
    for persons, name in ((1, "1 person"), (3, "3 persons")):
        p = statistics.median(times[name])
        b = statistics.median(times[f"branch {persons}"])
        print(f"  with the portrait branch, {name}: {p:.3f} s, ratio {p / s:.4f} ({100 * (p / s - 1):+.2f}%); "
              f"the branch's own work alone {b:.3f} s = {100 * b / s:.2f}% of the stock block (goal <= 3%)")


if __name__ == "__main__":
    main()
