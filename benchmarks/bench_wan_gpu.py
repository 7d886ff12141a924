"""Whole sampling steps on a GPU: the stock sampler vs the portrait, side by side in one run.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_wan_gpu.py [--steps 2]

Builds a randomly initialised, full-size Wan 2.1 I2V 14B in-process (bf16, no files), samples a
480p x 81-frame latent (21 x 60 x 104) for ``--steps`` euler steps with:

* the stock KSampler (cfg 1 and cfg 5),
* the FantasyPortrait Sampler with 1 and 3 people (cfg 1 / portrait_cfg 4: 2 passes; cfg 5 /
  portrait_cfg 4: 3 passes),

and prints seconds per step and peak VRAM of each, with ratios to the stock run of the same cfg.
Needs CUDA (about 40 GB of GPU memory for the 14B model in bf16 plus activations); exits otherwise.
``--tiny`` runs the same code on a 2-block, width-256 model on any device (a smoke test, not a figure).
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a tiny model on any device (smoke test)")
    ap.add_argument("--fp8", action="store_true", help="weights stored as float8_e4m3fn (as the fp8 files and Load "
                    "Diffusion Model's weight_dtype keep them); cfg 1 / portrait_cfg 4 only")
    ap.add_argument("--comfy-arg", action="append", default=[], help="a ComfyUI command-line option, e.g. "
                    "--comfy-arg=--reserve-vram --comfy-arg=110 to leave a 24 GB card's memory")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from comfy_inproc import NodeCall, import_host

    import torch

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures GPU time and memory (use --tiny for a smoke test)")
    import_host(os.environ.get("COMFYUI_DIR"), ROOT,
                (["--cpu"] if args.tiny and not torch.cuda.is_available() else []) + args.comfy_arg)
    import comfy.model_management as mm
    import nodes

    from checkpoint_factory import adapter_state_dict, flatten
    from fantasyportrait_pack.fantasyportrait_core import adapter_from_state_dict
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_pack.fantasyportrait_core.branch.multi import build_mask, query_scales
    from fantasyportrait_pack.fantasyportrait_core.branch.embeds import PortraitEmbeds
    from fantasyportrait_pack.fantasyportrait_core.tokens.windows import frame_count_of_latent

    from fantasyportrait_pack.nodes.nodes_sampling import FantasyPortraitSampler

    sampler = NodeCall(FantasyPortraitSampler)  # the node, called as ComfyUI's executor calls it

    torch.set_grad_enabled(False)
    from wan_models import FULL, TINY, random_wan

    cfg_model = TINY if args.tiny else FULL
    t_lat, h, w, text = (3, 8, 10, 12) if args.tiny else (21, 60, 104, 512)
    model = random_wan(cfg_model, weight_dtype=torch.float8_e4m3fn if args.fp8 else None)
    g = torch.Generator().manual_seed(0)

    class ClipOut:
        penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g)

    image = {"concat_latent_image": torch.randn(1, 16, t_lat, h, w, generator=g), "clip_vision_output": ClipOut()}
    positive = [[torch.randn(1, text, 4096, generator=g), dict(image)]]
    negative = [[torch.randn(1, text, 4096, generator=g), dict(image)]]
    latent = {"samples": torch.zeros(1, 16, t_lat, h, w)}
    frames = frame_count_of_latent(t_lat)
    adapter = adapter_from_state_dict(flatten(adapter_state_dict(model_dim=cfg_model["dim"],
                                                                 blocks=cfg_model["num_layers"], seed=3)), dtype="bf16")

    def embeds_for(persons):
        one = encode_features(adapter.encoder, torch.randn(1, frames, 554, generator=g))
        if persons == 1:
            return PortraitEmbeds(one)
        windows = one.windows.repeat(1, 1, persons, 1)
        rows, cols = -(-h // 2), -(-w // 2)
        labels = torch.zeros(rows, cols, dtype=torch.long)
        for i in range(persons):
            labels[rows // 4:3 * rows // 4, (i * cols) // persons + 1:((i + 1) * cols) // persons - 1] = i + 1
        labels = labels.reshape(-1)
        one.windows = windows
        return PortraitEmbeds(one, mask=build_mask(labels, persons, windows.shape[2] // persons, t_lat),
                                    query_scale=query_scales(labels, [1.0] * persons), size=(w * 8, h * 8))

    def timed(fn):
        mm.soft_empty_cache()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        return (time.perf_counter() - t0) / args.steps, peak

    def stock(cfg):
        return lambda: nodes.common_ksampler(model, 7, args.steps, cfg, "euler", "simple", positive, negative, latent)

    def portrait(persons, cfg, pcfg):
        p = embeds_for(persons)
        return lambda: sampler(model, adapter, p, 1.0, 0.0, 1.0, positive, negative, latent, 7, args.steps, cfg, pcfg,
                               "euler", "simple", 1.0)

    stock(1.0)()  # warm-up: loads the model
    print(f"torch {torch.__version__}, {mm.get_torch_device()}, Wan 2.1 I2V {'tiny' if args.tiny else '14B'} (random, "
          f"{'fp8' if args.fp8 else 'bf16'} weights{', ComfyUI ' + ' '.join(args.comfy_arg) if args.comfy_arg else ''}), "
          f"latent {t_lat}x{h}x{w} ({frames} frames), {args.steps} euler steps, seconds per step / peak GiB")
    for cfg, pcfg in ((1.0, 4.0),) if args.fp8 else ((1.0, 4.0), (5.0, 4.0)):
        base, base_peak = timed(stock(cfg))
        print(f"stock KSampler cfg {cfg:g}: {base:.2f} s/step, {base_peak:.2f} GiB")
        for persons, p_cfg in ((1, 1.0), (1, pcfg), (3, pcfg)):  # portrait_cfg 1: the same passes as the stock run
            s, peak = timed(portrait(persons, cfg, p_cfg))
            print(f"  portrait {persons} person(s), cfg {cfg:g} / portrait_cfg {p_cfg:g}: {s:.2f} s/step "
                  f"(x{s / base:.3f}), {peak:.2f} GiB (x{peak / base_peak:.3f})")


if __name__ == "__main__":
    main()
