"""Memory of a long video: a 1-chunk and a 4-chunk run of FantasyPortrait Long Video side by side in one process.

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_PYTHON benchmarks/bench_long.py [--gpu]

Peak resident memory (VmHWM, reset before each run) and, on a GPU, peak VRAM of each run, and their ratios to the
1-chunk run (then the 1-chunk run again, so the order of the runs does not decide the figures). Every run has the
same chunk length: a 4-chunk run samples 4 times as many chunks and writes a video 3.2 times as long.

* CPU (default): the tiny 2-block Wan and a random full-size Wan 2.1 VAE, 128x128, chunks of 17 frames, overlap 5,
  2 steps.
* ``--gpu``: a random full-size Wan 2.1 I2V 14B (bf16) and VAE, 832x480, chunks of 33 frames, overlap 9, 1 step,
  cfg 1 / portrait_cfg 4 (2 passes); about 40 GB of GPU memory.
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak resident set size
        fh.write("5")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="full-size 14B at 480p on CUDA")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from comfy_inproc import NodeCall, import_host

    import torch

    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device")
    import_host(os.environ.get("COMFYUI_DIR"), ROOT, [] if args.gpu else ["--cpu", "--use-pytorch-cross-attention"])
    import comfy.model_management as mm
    import folder_paths

    from checkpoint_factory import adapter_state_dict, flatten
    from fantasyportrait_pack.fantasyportrait_core import adapter_from_state_dict
    from fantasyportrait_pack.fantasyportrait_core.branch.embeds import PortraitEmbeds
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_pack.nodes.nodes_long import FantasyPortraitLongVideo
    from wan_models import FULL, TINY, random_wan, random_wan_vae

    torch.set_grad_enabled(False)
    folder_paths.set_output_directory(tempfile.mkdtemp())
    shape = FULL if args.gpu else TINY
    width, height, chunk, overlap, steps, text = (832, 480, 33, 9, 1, 512) if args.gpu else (128, 128, 17, 5, 2, 12)
    model, vae = random_wan(shape), random_wan_vae()
    adapter = adapter_from_state_dict(flatten(adapter_state_dict(model_dim=shape["dim"], blocks=shape["num_layers"],
                                                                 seed=3)), dtype="bf16")
    g = torch.Generator().manual_seed(0)
    positive, negative = [[torch.randn(1, text, 4096, generator=g), {}]], [[torch.randn(1, text, 4096, generator=g), {}]]
    clip = type("ClipOut", (), {"penultimate_hidden_states": torch.randn(1, 257, 1280, generator=g)})()
    portrait = torch.rand(1, height, width, 3, generator=g)
    node = NodeCall(FantasyPortraitLongVideo)

    def run(chunks, seed):
        frames = chunk + (chunks - 1) * (chunk - overlap)
        embeds = PortraitEmbeds(encode_features(adapter.encoder, torch.randn(1, frames, 554, generator=g)), fps=25.0)
        mm.soft_empty_cache()
        reset_hwm()
        if args.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        node(model=model, adapter=adapter, portrait_embeds=embeds, portrait_strength=1.0, start_percent=0.0,
             end_percent=1.0, positive=positive, negative=negative, vae=vae, start_image=portrait, width=width,
             height=height, seed=seed, steps=steps, cfg=1.0, portrait_cfg=4.0, sampler_name="euler",
             scheduler="simple", chunk_length=chunk, overlap=overlap, colour_match="portrait", fps=25.0,
             clip_vision_output=clip)
        seconds = time.perf_counter() - t0
        vram = torch.cuda.max_memory_allocated() / 2 ** 30 if args.gpu else float("nan")
        return frames, seconds, vm_hwm_mb(), vram

    run(1, 0)  # warm-up: loads the models
    print(f"torch {torch.__version__}, {mm.get_torch_device()}, Wan 2.1 I2V {'14B' if args.gpu else 'tiny'} "
          f"(random), {width}x{height}, chunks of {chunk} (overlap {overlap}), {steps} step(s), colour match on")
    base = None
    for seed, chunks in enumerate((1, 4, 1), start=1):
        frames, seconds, rss, vram = run(chunks, seed)
        base = base or (rss, vram)
        print(f"{chunks} chunk(s), {frames} frames: {seconds:.1f} s, peak RSS {rss:.0f} MB (x{rss / base[0]:.3f}), "
              f"peak VRAM {vram:.2f} GiB (x{vram / base[1]:.3f})")


if __name__ == "__main__":
    main()
