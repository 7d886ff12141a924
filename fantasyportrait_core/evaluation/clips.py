"""The motion check on files or frames: the output and its drivers go through the pack's own face pipeline (the
released detector, landmarks and PD-FGC encoder: :func:`~..motion.extraction.extract_features`), drivers retimed to
the output's frame rate, then :func:`.report.evaluate`; with a reference, PSNR and SSIM frame by frame; with a
portrait and an ArcFace model, identity similarity."""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import FantasyPortraitError
from ..faces.detector import portrait_faces
from ..faces.tracking import DEFAULT_MIN_FACE, FaceTracks
from ..motion.extraction import ExpressionFeatures, FaceModels, ProgressFn, extract_features
from ..video import DrivingFrames, resample_indices
from .identity import ArcFace, find_arcface, identity_similarity
from .reference import frame_scores
from .report import evaluate


def at_fps(clip: ExpressionFeatures, fps: float) -> ExpressionFeatures:
    """A driver's features and tracks at another frame rate (nearest frame, as a driving clip is retimed)."""
    if not clip.fps or not fps or abs(clip.fps - fps) < 1e-3:
        return clip
    idx = resample_indices(clip.features.shape[1], clip.fps, fps)
    t = clip.tracks
    tracks = None if t is None else FaceTracks(t.boxes[:, idx], t.landmarks[:, idx], t.valid[:, idx], t.frame_size,
                                               list(t.notes))
    return ExpressionFeatures(clip.features[:, idx], tracks, float(fps))


def portrait_landmarks(image: np.ndarray, models: FaceModels) -> list[np.ndarray]:
    """The 222 landmarks of every face in a portrait, left to right."""
    return [models.landmarker.refine(image, box=b).points.astype(np.float64)
            for b in portrait_faces(image, models.detector)]


def add_identity(report: dict, output_frames, output: ExpressionFeatures, portrait: np.ndarray | None,
                 models: FaceModels, arcface_dir: str | None) -> None:
    """Identity similarity of each output face to the portrait's face at the same place (left to right), or why it
    is absent."""
    path = find_arcface(arcface_dir) if arcface_dir else None
    if portrait is None or path is None:
        why = ("no portrait given" if portrait is None else "no ArcFace model folder given" if not arcface_dir else
               f"no ArcFace model in {arcface_dir}")
        report["identity"] = {"absent": f"identity similarity not measured: {why} (it needs the portrait and "
                                        "insightface's ArcFace, w600k_r50.onnx of buffalo_l, in a local folder)"}
        return
    faces = portrait_landmarks(portrait, models)
    if len(faces) != report["faces"]:
        raise FantasyPortraitError(f"The portrait has {len(faces)} face(s) and the output {report['faces']}: the "
                                   "identity check compares the same faces (left to right).")
    arcface = ArcFace(path)
    for i, person in enumerate(report["persons"]):
        person["identity"] = identity_similarity(arcface, output_frames, output.tracks.landmarks[i], portrait,
                                                 faces[i])
    report["identity"] = {"model": os.path.basename(path)}


def check_files(models: FaceModels, output: str, drivers: list[str], driver_start: int = 0, mapping: str = "",
                reference: str | None = None, portrait: str | None = None, arcface_dir: str | None = None,
                max_offset: int | None = None, min_face: float = DEFAULT_MIN_FACE,
                progress: ProgressFn | None = None) -> dict:
    """The motion-check report of an output video against its driving video(s) (each retimed to the output's
    frame rate, from ``driver_start``), optionally a self-reenactment reference and the portrait."""
    started = time.perf_counter()
    out = DrivingFrames(output, 0, 0, None, name=os.path.basename(output))
    out_feats = extract_features(out, models, min_face, source=f"the output video ({out.name})", progress=progress)
    clips = [DrivingFrames(d, driver_start, 0, out.fps, name=os.path.basename(d)) for d in drivers]
    driver_feats = [extract_features(c, models, min_face, source=f"the driving video {c.name}") for c in clips]
    ref = ref_feats = None
    if reference:
        ref = DrivingFrames(reference, 0, 0, out.fps, name=os.path.basename(reference))
        ref_feats = extract_features(ref, models, min_face, source=f"the reference video {ref.name}")
    report = evaluate(out_feats, driver_feats, [c.name for c in clips], mapping, ref_feats, max_offset)
    report["output"] = output
    report["drivers"] = [{"path": d, "persons": f.features.shape[0], "frames": len(c), "fps": c.fps,
                          "retimed": abs(c.source_fps - c.fps) > 1e-3} for d, c, f in zip(drivers, clips, driver_feats)]
    for d in report["drivers"]:
        if d["retimed"]:
            report["notes"].append(f"{os.path.basename(d['path'])} was retimed to the output's {out.fps:g} fps")
    if ref is not None:
        scores, count, resized = frame_scores(out, ref)
        report["reference"] = {"path": reference, "frames": count, **scores}
        if resized:
            report["notes"].append("the reference frames were resized to the output's size for PSNR and SSIM")
    image = None
    if portrait:
        image = next(iter(DrivingFrames(portrait, 0, 1, None, name=os.path.basename(portrait))))
    add_identity(report, out, out_feats, image, models, arcface_dir)
    report["seconds"] = time.perf_counter() - started
    report["seconds_per_frame"] = report["seconds"] / max(report["frames"], 1)
    return report
