"""The ``fantasyportrait`` command line.

``fantasyportrait encode``: expression features -> expression tokens and per-latent-frame windows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import FantasyPortraitError


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fantasyportrait",
        description="FantasyPortrait tools: run the portrait-animation pipeline's stages outside ComfyUI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    enc = sub.add_parser(
        "encode",
        help="turn expression features into expression tokens and per-latent-frame windows",
        description=(
            "Read per-person expression features (a safetensors file with 'features' [P, F, 554] float32, "
            "as 'fantasyportrait extract' writes) and write 'tokens' [P, F*24, C] and 'windows' "
            "[P, T_lat, 97, C] (float32) with the adapter's token encoder. F must be 4k+1 unless --fit "
            "says how to make it so."
        ),
    )
    enc.add_argument("--adapter", required=True, metavar="CKPT",
                     help="adapter weights: fantasyportrait_model.ckpt or the single-file .safetensors")
    enc.add_argument("--features", required=True, metavar="FEATS.safetensors",
                     help="input features: 'features' [P, F, 554] (or [F, 554] for one person)")
    enc.add_argument("--out", required=True, metavar="TOKENS.safetensors", help="output file to write")
    enc.add_argument("--proj-scale", type=_positive_float, default=1.0,
                     help="multiplier for the 4 projection tokens per frame (head pose, eyes, emotion, mouth); default 1")
    enc.add_argument("--mouth-scale", type=_positive_float, default=1.0,
                     help="multiplier for the 16 mouth (lip) resampler tokens per frame; default 1")
    enc.add_argument("--emo-scale", type=_positive_float, default=1.0,
                     help="multiplier for the 4 emotion resampler tokens per frame; default 1")
    enc.add_argument("--fit", choices=("error", "trim", "pad"), default="error",
                     help="what to do when F is not 4k+1: refuse (default), trim to the largest 4k+1 "
                          "(released behaviour) or pad by repeating the last frame")
    enc.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                     help="compute dtype of the token encoder; the output is always float32 (default fp32)")
    enc.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu or cuda (default cpu)")
    enc.set_defaults(func=_cmd_encode)
    return parser


def _cmd_encode(args) -> int:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from .adapter import GroupScales
    from .checkpoints import load_adapter
    from .encoding import encode_features
    from .windows import fit_frame_count

    if not os.path.isfile(args.features):
        raise FantasyPortraitError(f"Features file not found: {args.features}")
    try:
        data = load_file(args.features)
    except (SafetensorError, OSError, ValueError) as exc:
        raise FantasyPortraitError(f"{args.features} is not a readable safetensors file ({exc}).") from exc
    if "features" not in data:
        raise FantasyPortraitError(
            f"{args.features} has no 'features' tensor (it has: {', '.join(sorted(data)) or 'nothing'}).")
    features = data["features"].float()
    features, note = fit_frame_count(features, args.fit)
    if note:
        print(f"fantasyportrait: {note}", file=sys.stderr)

    adapter = load_adapter(args.adapter, dtype=args.dtype)
    try:
        device = torch.device(args.device)
        encoder = adapter.encoder.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise FantasyPortraitError(f"Cannot use device {args.device!r}: {exc}") from exc
    scales = GroupScales(proj=args.proj_scale, mouth=args.mouth_scale, emo=args.emo_scale)

    def progress(done, total):
        print(f"\rencoding frames {done}/{total}", end="", file=sys.stderr, flush=True)

    embeds = encode_features(encoder, features, scales, progress=progress)
    print(file=sys.stderr)
    metadata = {
        "num_frames": str(embeds.num_frames),
        "tokens_per_frame": str(embeds.tokens_per_frame),
        "adapter": adapter.source,
        "scales": json.dumps({"proj": scales.proj, "mouth": scales.mouth, "emo": scales.emo}),
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    save_file({"tokens": embeds.tokens.cpu().contiguous(), "windows": embeds.windows.cpu().contiguous()},
              args.out, metadata=metadata)
    print(f"wrote {args.out}: tokens {tuple(embeds.tokens.shape)}, windows {tuple(embeds.windows.shape)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FantasyPortraitError as exc:
        print(f"fantasyportrait {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
