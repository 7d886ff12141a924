"""The commands that run the model core (``extract``, ``encode``, ``eval``): they import torch, numpy and OpenCV when they
run, and say what to install when one is missing; the rest of the command line never imports them."""

from __future__ import annotations

import json
import os
import sys

from fantasyportrait_core.errors import FantasyPortraitError, require


def need_model_core(command: str, opencv: bool = True) -> None:
    """Say what to install when the model core's own dependencies are missing (before anything else fails)."""
    for module, pip_name in (("numpy", "numpy"), ("torch", "torch"), ("cv2", "opencv-python-headless")):
        if module != "cv2" or opencv:
            require(module, f"fantasyportrait {command}", pip_name)


def progress_printer(label: str):
    def progress(done, total):
        print(f"\r{label} {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return progress


def cmd_extract(args) -> int:
    need_model_core("extract")
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from fantasyportrait_core.motion.extraction import extract_features, iter_preview, load_face_models
    from fantasyportrait_core.video import RELEASED_MULTI_FPS, DrivingFrames, shortest, write_video
    from fantasyportrait_core.tokens.windows import check_clip_length

    if args.max_frames is not None and args.max_frames < 1:
        raise FantasyPortraitError("--max-frames must be at least 1.")
    if args.fps is not None and args.fps <= 0:
        raise FantasyPortraitError("--fps must be positive.")
    if args.max_frames is None:
        check_clip_length(args.frames, "--frames")
    length = args.max_frames if args.max_frames is not None else args.frames
    models = load_face_models(args.models, motion=args.motion_encoder)
    if args.insightface:
        from fantasyportrait_core.faces.detector import InsightFaceDetector

        models.detector = InsightFaceDetector(args.insightface)
    try:
        models.motion_encoder.to(torch.device(args.device))
    except (RuntimeError, AssertionError) as exc:
        raise FantasyPortraitError(f"Cannot use device {args.device!r}: {exc}") from exc

    target_fps = args.fps if args.fps is not None else (RELEASED_MULTI_FPS if len(args.video) > 1 else None)
    clips = [DrivingFrames(path, args.start, length, target_fps) for path in args.video]
    for path, clip in zip(args.video, clips):
        if abs(clip.source_fps - clip.fps) > 1e-3:
            print(f"fantasyportrait: {os.path.basename(path)} runs at {clip.source_fps:g} fps; retimed to "
                  f"{clip.fps:g} fps", file=sys.stderr)
    target_fps = clips[0].fps
    frames, note = shortest([len(c) for c in clips], "the videos")
    if note:
        print(f"fantasyportrait: {note}", file=sys.stderr)
        clips = [clip.first(frames) for clip in clips]

    results = []
    for k, clip in enumerate(clips):
        name = clip.name
        result = extract_features(clip, models, min_face=args.min_face, persons=args.persons,
                                  batch_size=args.batch_size, fps=clip.fps, source=name,
                                  progress=progress_printer(f"{name}: tracking and encoding"))
        for note in result.notes:
            print(f"fantasyportrait: {name}: {note}", file=sys.stderr)
        print(f"{name}: {result.tracks.num_persons} person(s) over {frames} frames", file=sys.stderr)
        results.append(result)
        if args.preview:
            root, ext = os.path.splitext(args.preview)
            out = args.preview if len(clips) == 1 else f"{root}_{k + 1}{ext or '.mp4'}"
            write_video(out, iter_preview(clip, result.tracks), clip.fps)
            print(f"wrote preview {out}", file=sys.stderr)

    tensors = {
        "features": torch.cat([r.features for r in results]).float().contiguous(),
        "boxes": torch.from_numpy(np.concatenate([r.tracks.boxes for r in results])).float(),
        "landmarks": torch.from_numpy(np.concatenate([r.tracks.landmarks for r in results])).float(),
        "valid": torch.from_numpy(np.concatenate([r.tracks.valid for r in results])),
    }
    metadata = {
        "fps": f"{target_fps:g}",
        "num_frames": str(frames),
        "num_persons": str(tensors["features"].shape[0]),
        "sources": json.dumps([c.name for c in clips]),
        "start_frame": str(args.start),
        "persons_per_source": json.dumps([r.tracks.num_persons for r in results]),
        "frame_sizes": json.dumps([list(r.tracks.frame_size) for r in results]),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}: features {tuple(tensors['features'].shape)} at {target_fps:g} fps")
    return 0


def cmd_encode(args) -> int:
    need_model_core("encode", opencv=bool(args.motion_preview))  # OpenCV only draws the motion preview
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from fantasyportrait_core.tokens.adapter import GroupScales
    from fantasyportrait_core.tokens.checkpoint import load_adapter
    from fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_core.motion.control import MotionControl, apply_motion_control, draw_motion_preview, parse_component
    from fantasyportrait_core.tokens.windows import fit_frame_count

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

    control = MotionControl(headpose=parse_component(args.head), eye=parse_component(args.eyes),
                            emo=parse_component(args.emotion), mouth=parse_component(args.mouth),
                            reference_frame=args.reference_frame)
    driven = features
    features = apply_motion_control(features, control, args.control_person)
    if args.motion_preview:
        import cv2

        shown = (args.control_person or [0])[0]
        pick = (lambda f: f) if features.ndim == 2 else (lambda f: f[shown])
        preview = draw_motion_preview(pick(driven), pick(features), args.reference_frame)
        os.makedirs(os.path.dirname(os.path.abspath(args.motion_preview)), exist_ok=True)
        if not cv2.imwrite(args.motion_preview, preview[..., ::-1]):
            raise FantasyPortraitError(f"Cannot write the motion preview {args.motion_preview} (use a .png name).")

    adapter = load_adapter(args.adapter)
    try:
        device = torch.device(args.device)
        encoder = adapter.encoder.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise FantasyPortraitError(f"Cannot use device {args.device!r}: {exc}") from exc
    scales = GroupScales(proj=args.proj_scale, mouth=args.mouth_scale, emo=args.emo_scale)

    embeds = encode_features(encoder, features, scales, progress=progress_printer("encoding frames"))
    metadata = {
        "num_frames": str(embeds.num_frames),
        "tokens_per_frame": str(embeds.tokens_per_frame),
        "adapter": adapter.source,
        "scales": json.dumps({"proj": scales.proj, "mouth": scales.mouth, "emo": scales.emo}),
        "motion_control": control.describe(),
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    save_file({"tokens": embeds.tokens.cpu().contiguous(), "windows": embeds.windows.cpu().contiguous()},
              args.out, metadata=metadata)
    print(f"wrote {args.out}: tokens {tuple(embeds.tokens.shape)}, windows {tuple(embeds.windows.shape)}")
    return 0


def cmd_eval(args) -> int:
    need_model_core("eval")
    import torch

    from fantasyportrait_core.evaluation.clips import check_files
    from fantasyportrait_core.evaluation.report import summary
    from fantasyportrait_core.motion.extraction import load_face_models

    models = load_face_models(args.models, motion=args.motion_encoder)
    try:
        models.motion_encoder.to(torch.device(args.device))
    except (RuntimeError, AssertionError) as exc:
        raise FantasyPortraitError(f"Cannot use device {args.device!r}: {exc}") from exc
    report = check_files(models, args.output, args.driver, args.driver_start, args.mapping or "", args.reference,
                         args.portrait, args.insightface, args.max_offset, args.min_face,
                         progress=progress_printer("the output: tracking and encoding"))
    print(summary(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        import cv2

        from fantasyportrait_core.evaluation.plot import draw_report

        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        if not cv2.imwrite(args.plot, draw_report(report)[..., ::-1]):
            raise FantasyPortraitError(f"Cannot write the plot {args.plot} (use a .png name).")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
