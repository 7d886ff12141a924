"""The ``fantasyportrait`` command line.

``fantasyportrait extract``: driving videos -> per-person expression features (face pipeline).
``fantasyportrait encode``: expression features -> expression tokens and per-latent-frame windows.
``fantasyportrait run``: a whole workflow on a ComfyUI server, headless.
``fantasyportrait batch``: a jobs file over one or many ComfyUI servers, resumably.
``fantasyportrait setup``: the pack and every model file into a ComfyUI.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import shutil
import sys
import time

from fantasyportrait_core.errors import FantasyPortraitError
from fantasyportrait_core.sizing import RESOLUTIONS

from .model_commands import cmd_encode, cmd_eval, cmd_extract


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _command(sub, name: str, func, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` that runs ``func(args)``."""
    cmd = sub.add_parser(name, help=help, description=description)
    cmd.set_defaults(func=func)
    return cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fantasyportrait",
        description="FantasyPortrait tools: run the portrait-animation pipeline's stages outside ComfyUI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ext = _command(sub, "extract", cmd_extract,
        help="track the faces in driving videos and extract per-person expression features",
        description=(
            "Detect and track every face in the driving video(s), align each face and run the PD-FGC motion "
            "encoder. Writes 'features' [P, F, 554] float32, 'boxes' [P, F, 4], 'landmarks' [P, F, 222, 2] and "
            "'valid' [P, F] (False where a person was missed and filled from neighbouring frames), with fps and "
            "frame count in the metadata. Persons are numbered left to right; several videos are concatenated "
            "in the order given and brought to a common frame count."
        ),
    )
    ext.add_argument("--video", action="append", required=True, metavar="V",
                     help="driving video; repeat for one video per person (persons are concatenated in order)")
    ext.add_argument("--models", required=True, metavar="DIR",
                     help="folder holding the released face_det.onnx, face_landmark.onnx and pd_fpg.pth")
    ext.add_argument("--motion-encoder", metavar="FILE",
                     help="PD-FGC weights to use instead of DIR/pd_fpg.pth: pd_fpg.pth or the single-file "
                          "FantasyPortrait .safetensors (its 'pd_fpg.' part)")
    ext.add_argument("--insightface", metavar="DIR",
                     help="detect faces with insightface's SCRFD from this local model folder (optional dependency "
                          "insightface) instead of the released face_det.onnx; landmarks stay the released ones")
    ext.add_argument("--out", required=True, metavar="FEATS.safetensors", help="output file to write")
    ext.add_argument("--start", type=int, default=0, metavar="N",
                     help="skip the first N frames of each video (counted after --fps retiming)")
    ext.add_argument("--frames", type=int, default=81, metavar="N",
                     help="frames to use from --start: 4k+1, default 81 as released, 0 = the whole clip. Only "
                          "these frames are decoded, one at a time, so a long clip costs no more memory")
    ext.add_argument("--max-frames", type=int, metavar="N",
                     help="use at most N frames (any count) instead of --frames")
    ext.add_argument("--fps", type=float, metavar="FPS",
                     help="retime the driving clips to this frame rate first (nearest frame). Default: one video "
                          "keeps its rate; several videos are retimed to 25 fps, as the released multi-person code "
                          "does")
    ext.add_argument("--persons", type=int, default=0, metavar="N",
                     help="keep the N persons found in most frames of each video (default: all persons found)")
    ext.add_argument("--min-face", type=float, default=96, metavar="PX",
                     help="smallest face (landmark box side, pixels) that is kept; released value 96")
    ext.add_argument("--batch-size", type=int, metavar="N",
                     help="aligned faces per motion-encoder batch (default: 1 on CPU, where larger batches measured slower, 32 on GPU)")
    ext.add_argument("--device", default="cpu", help="torch device for the motion encoder, e.g. cpu or cuda (default cpu)")
    ext.add_argument("--preview", metavar="PREVIEW.mp4",
                     help="also write a video with each person's box, id and landmarks drawn (one file per "
                          "video: PREVIEW_1.mp4, ... when several videos are given)")

    enc = _command(sub, "encode", cmd_encode,
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
    for flag, label in (("--head", "head pose"), ("--eyes", "eyes"), ("--emotion", "emotion"), ("--mouth", "mouth")):
        enc.add_argument(flag, default="follow", metavar="MODE",
                         help=f"motion control of the {label}, on the features before encoding: follow (default), "
                              "freeze, scale:AMOUNT (<1 calms, >1 exaggerates), each optionally with ,smooth:SIGMA "
                              "(Gaussian, in frames), e.g. scale:0.5,smooth:2")
    enc.add_argument("--reference-frame", type=int, default=0, metavar="N",
                     help="frame that freeze holds and scale measures from (default 0)")
    enc.add_argument("--control-person", type=int, action="append", metavar="P",
                     help="apply the motion control to person P only (repeatable; default every person)")
    enc.add_argument("--motion-preview", metavar="PREVIEW.png",
                     help="write a plot of each component's motion before and after the control (first controlled person)")
    enc.add_argument("--fit", choices=("error", "trim", "pad"), default="error",
                     help="what to do when F is not 4k+1: refuse (default), trim to the largest 4k+1 "
                          "(released behaviour) or pad by repeating the last frame")
    enc.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu or cuda (default cpu)")

    ev = _command(sub, "eval", cmd_eval,
        help="check how well an output video follows its driving video(s): the motion-fidelity report",
        description=(
            "Track the faces of the output and of its driver(s) with the released face models, extract their "
            "PD-FGC features and compare the motion, relative to the first frame so identity does not count: per "
            "face head_pose_error, eye_error, expression_error, mouth_open_corr, jitter, the best time offset and "
            "the motion correlation; the leakage matrix between faces and drivers; with --reference (a "
            "self-reenactment's real clip) the paper's lmd, PSNR and SSIM; with --portrait and --insightface, "
            "ArcFace identity similarity. Output faces are matched to drivers left to right (or by --mapping); "
            "drivers are retimed to the output's frame rate."
        ),
    )
    ev.add_argument("--models", required=True, metavar="DIR",
                    help="folder holding the released face_det.onnx, face_landmark.onnx and pd_fpg.pth (as for extract)")
    ev.add_argument("--output", required=True, metavar="OUT.mp4", help="the animated video to check")
    ev.add_argument("--driver", action="append", required=True, metavar="D.mp4",
                    help="driving video; repeat for one per person (persons are taken in order, each clip's left to "
                         "right)")
    ev.add_argument("--driver-start", type=int, default=0, metavar="N",
                    help="the driving frame the output's first frame was made from (Face Tracker's start_frame; "
                         "counted at the output's frame rate; default 0)")
    ev.add_argument("--mapping", metavar="2,1", help="which driver person drives each output face, left to right "
                                                    "(as Multi-Portrait Combine's mapping); default in order")
    ev.add_argument("--reference", metavar="REF.mp4",
                    help="ground truth of a self-reenactment (its first frame was the portrait): adds lmd, PSNR, SSIM")
    ev.add_argument("--portrait", metavar="P.png", help="the portrait image, for identity similarity")
    ev.add_argument("--insightface", metavar="DIR",
                    help="local folder with insightface's ArcFace model (w600k_r50.onnx of buffalo_l) for identity "
                         "similarity; without it identity is reported as absent")
    ev.add_argument("--json", metavar="REPORT.json", help="write the whole report (every number and curve) as JSON")
    ev.add_argument("--plot", metavar="REPORT.png", help="write the report's picture: curves per face and the "
                                                         "leakage matrix")
    ev.add_argument("--max-offset", type=int, metavar="N",
                    help="largest time offset (frames) searched (default: a third of the clip, at most 15)")
    ev.add_argument("--min-face", type=float, default=96, metavar="PX",
                    help="smallest face kept (landmark box side, pixels), as for extract; default 96")
    ev.add_argument("--motion-encoder", metavar="FILE", help="PD-FGC weights instead of DIR/pd_fpg.pth")
    ev.add_argument("--device", default="cpu", help="torch device for the motion encoder (default cpu)")

    run = _command(sub, "run", _cmd_run,
        help="run an API-format workflow on a ComfyUI server and download the video",
        description=(
            "Upload the portrait image and driving video(s) to a running ComfyUI (or one started for the run), "
            "put them into the workflow's "
            "LoadImage and LoadVideo nodes (LoadVideo nodes in node-id order), queue it, show progress and "
            "download the saved video. A failed run exits with status 1 and ComfyUI's node error. With a shipped "
            "workflow, what is not given (--image, --video) comes from the pack's examples/: 'fantasyportrait run "
            "--comfyui DIR' alone animates the example portrait."
        ),
    )
    run.add_argument("--server", metavar="URL",
                     help="address of a running ComfyUI, e.g. http://127.0.0.1:8188; without it a private headless "
                          "ComfyUI is started for this run on a free loopback port and stopped afterwards")
    _private_server_options(run)
    run.add_argument("--workflow", default="single", metavar="W_api.json",
                     help="API-format workflow file, or a shipped one by name: single (the default), "
                          "two_from_one_video, people_from_videos, custom_sampling, long, long_people_from_videos, fast")
    run.add_argument("--image", metavar="IMG", help="portrait image for the workflow's LoadImage node (default with a "
                                                    "shipped workflow: the pack's example portrait)")
    run.add_argument("--video", action="append", default=[], metavar="VID",
                     help="driving video; repeat for workflows with several LoadVideo nodes (default with a shipped "
                          "workflow: the pack's example clip(s))")
    run.add_argument("--out", default="fantasyportrait.mp4", metavar="OUT.mp4",
                     help="where to write the resulting video (default: fantasyportrait.mp4 here)")
    run.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (default: wait)")
    run.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override a workflow input before queueing (repeatable); NODE is a node id or title, "
                          "e.g. --set 19.seed=7 --set 1.unet_name=wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors")

    batch = _command(sub, "batch", _cmd_batch,
        help="run a jobs file (CSV or JSONL) over one or many ComfyUI servers, resumably",
        description=(
            "Run every job of a jobs file (one per row: image, video or video/video2/..., optional workflow, "
            "seed, steps, cfg, portrait_cfg, strength, mapping, size, prompt, set, output) on one or more ComfyUI "
            "servers. Every row is checked before anything is queued. A manifest (JSONL) records each job's "
            "state; running the same command again skips the jobs that are done. Exit status 0 only when every "
            "job is done; Ctrl-C takes this batch's waiting prompts off the servers' queues."),
    )
    batch.add_argument("jobs", metavar="JOBS", help="jobs file, .csv (header row) or .jsonl; paths in it are "
                                                   "relative to it")
    batch.add_argument("--server", action="append", default=[], metavar="URL",
                       help="a ComfyUI server, repeatable; with none, a private headless ComfyUI is started")
    batch.add_argument("--servers-file", metavar="FILE",
                       help="more servers, one per line: URL [| Name: value | ...] (extra HTTP headers for that "
                            "server; ${VAR} reads an environment variable)")
    batch.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="extra HTTP header for every server (e.g. an auth token); never printed or recorded")
    batch.add_argument("--per-server", type=int, default=1, metavar="N", help="jobs in flight per server (default 1)")
    batch.add_argument("--out-dir", metavar="DIR", help="where the videos go (default: outputs/ beside the jobs file)")
    batch.add_argument("--manifest", metavar="FILE", help="manifest file (default: OUT_DIR/manifest.jsonl)")
    batch.add_argument("--retries", type=int, default=3, metavar="N",
                       help="attempts after a transient error (server error, out of memory), with backoff (default 3)")
    batch.add_argument("--timeout", type=float, metavar="S", help="give up a job after S seconds (counts as transient)")
    batch.add_argument("--dry-run", action="store_true",
                       help="only check the jobs file (and, with servers, their nodes and model files)")
    batch.add_argument("--cancel-running", action="store_true",
                       help="on Ctrl-C also interrupt this batch's running prompts (default: let them finish)")
    _private_server_options(batch)

    setup = _command(sub, "setup", _cmd_setup,
        help="put the pack and every model file the shipped workflows need into a ComfyUI",
        description=(
            "Copy the pack into ComfyUI's custom_nodes/, install its requirements into ComfyUI's Python (its torch "
            "is held), and download the Wan 2.1 and FantasyPortrait model files from Hugging Face into the folders "
            "ComfyUI reads (extra_model_paths.yaml included), skipping complete files, resuming interrupted ones "
            "and checking each against the hub's SHA-256. HF_ENDPOINT (a mirror) and HF_TOKEN are honoured."),
    )
    setup.add_argument("--comfyui", metavar="DIR", help="the ComfyUI folder (default: the one holding this pack)")
    setup.add_argument("--comfyui-python", metavar="PY",
                       help="ComfyUI's Python (default: its venv/.venv or portable Python, else this one)")
    setup.add_argument("--variant", choices=["fp8", "bf16"], default="fp8",
                       help="Wan 2.1 I2V 14B weights: fp8_e4m3fn (about 17 GB, default) or bf16 (about 33 GB)")
    setup.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="480p", help="Wan 2.1 I2V model (default 480p)")
    setup.add_argument("--fast", action="store_true",
                       help="also download lightx2v's step/cfg-distill LoRA for Wan 2.1 I2V 480p (Kijai/WanVideo_comfy, "
                            "into loras/) that the fast workflow (4 steps) uses; off by default")
    setup.add_argument("--dry-run", action="store_true",
                       help="list what would be installed and downloaded, where and how large; change nothing "
                            "(works offline, marking sizes it could not look up)")
    return parser


def _cmd_setup(args) -> int:
    from .setup import run_setup

    return run_setup(args.comfyui, args.comfyui_python, args.variant, args.resolution, args.dry_run,
                     say=lambda s: print(s, file=sys.stderr), fast=args.fast)


def _private_server_options(cmd) -> None:
    cmd.add_argument("--comfyui", metavar="DIR",
                     help="the ComfyUI to start when there is no --server (default: the one whose custom_nodes/ "
                          "holds this pack)")
    cmd.add_argument("--comfyui-python", metavar="PY",
                     help="Python of that ComfyUI (default: its venv or portable Python, else this one)")
    cmd.add_argument("--comfyui-arg", action="append", default=[], metavar="ARG",
                     help="extra argument for that ComfyUI's main.py, repeatable (e.g. --comfyui-arg=--lowvram)")


def _status_printer():
    """One overall progress line: rewritten in place on a terminal, else printed every 10 s."""
    last = {"t": 0.0, "len": 0}

    def show(text):
        if sys.stderr.isatty():
            text = text[:max(20, shutil.get_terminal_size().columns - 1)]
            sys.stderr.write("\r" + text.ljust(last["len"]))
            last["len"] = len(text)
            sys.stderr.flush()
        elif time.monotonic() - last["t"] > 10:
            last["t"] = time.monotonic()
            print(f"[batch] {text}", file=sys.stderr)
    return show


@contextlib.contextmanager
def _private_comfyui(args):
    """A private headless ComfyUI for ``run`` or ``batch`` (``--comfyui``, ``--comfyui-python``,
    ``--comfyui-arg``), stopped afterwards; yields its URL."""
    from .private import PrivateServer, find_comfyui

    say = lambda s: print(s, file=sys.stderr)  # noqa: E731
    with PrivateServer(find_comfyui(args.comfyui), args.comfyui_python, args.comfyui_arg, progress=say) as url:
        yield url
    say("stopped the private ComfyUI")


def _cmd_batch(args) -> int:
    from .batch import load_jobs, parse_servers, run_batch
    from .runner import RunError

    servers = parse_servers(args.server, args.servers_file, args.header)
    options = dict(out_dir=args.out_dir, manifest=args.manifest, per_server=args.per_server, retries=args.retries,
                   timeout=args.timeout, dry_run=args.dry_run, cancel_running=args.cancel_running,
                   status_line=_status_printer())
    try:
        if servers or args.dry_run:
            return run_batch(args.jobs, servers, **options)
        loaded = load_jobs(args.jobs)  # a bad jobs file is reported before a server is started
        with _private_comfyui(args) as url:
            return run_batch(args.jobs, [(url, {})], loaded=loaded, **options)
    except RunError as exc:
        print(f"fantasyportrait batch: failed: {exc}", file=sys.stderr)
        return 1


def _cmd_run(args) -> int:
    from . import SHIPPED, shipped_workflow
    from .example_inputs import examples_dir, for_workflow
    from .runner import RunError, run

    if args.workflow in SHIPPED and not os.path.exists(args.workflow):  # a shipped graph by its short name
        args.workflow = shipped_workflow(args.workflow)
    example = for_workflow(args.workflow)
    if example and (args.image is None or not args.video):
        missing = [flag for flag, value in (("--image", args.image), ("--video", args.video)) if not value]
        args.image = args.image or example[0]
        args.video = args.video or example[1]
        files = ", ".join(os.path.basename(p) for p in [args.image, *args.video] if p in (example[0], *example[1]))
        print(f"no {' or '.join(missing)} given: using the pack's example {files} (from {examples_dir()})",
              file=sys.stderr)
    try:
        if args.server:
            out = run(args.server, args.workflow, args.image, args.video, args.out, timeout=args.timeout,
                      sets=args.set)
        else:
            with _private_comfyui(args) as url:
                out = run(url, args.workflow, args.image, args.video, args.out, timeout=args.timeout,
                          sets=args.set)
    except RunError as exc:
        print(f"fantasyportrait run: failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
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
