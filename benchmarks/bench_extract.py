"""Expression extraction: speed against the released pipeline, and peak memory on long clips.

Speed (default): one single-face clip of ``--frames`` frames (jgz.mp4 looped, written to a temporary
file) goes through

* the pack: ``DrivingFrames`` (decodes only the used frames) -> ``extract_features`` (two tracking
  passes, the second reusing the first pass's detections, then the PD-FGC encoder);
* the released stages as released, in this process, on the same frames: OpenCV reads every frame of
  the file, ``det_landmarks`` (``CameraDemo``, two passes), ``get_drive_expression_pd_fgc`` (one
  frame at a time). Their code is loaded from a checkout of Fantasy-AMAP/fantasy-portrait given with
  ``--released DIR`` (never copied into this repository); onnx, scipy and tqdm, which only its
  imports need, are replaced by small stand-ins when they are not installed.

Both use the released face models and the same random PD-FGC weights. It prints the time of each
stage, the whole-pipeline ratio, and whether the outputs agree (landmarks bit-exact, features to
1e-4 relative). Without ``--released`` only the pack is timed.

Memory (``--memory``): makes a 60 s 1080p clip (jgz.mp4 looped and upscaled) and runs
``fantasyportrait extract`` on it in a child process, reporting the child's peak RSS with the default
81 frames, and with the whole clip for shorter cuts (10 s and 20 s) to show how memory grows with the
used frames.

Usage: python benchmarks/bench_extract.py [--released DIR] [--frames 81] [--memory]
Machine noise is large here; compare the ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the tests' media helpers

from fantasyportrait_core.motion.extraction import FaceModels, extract_features  # noqa: E402
from fantasyportrait_core.faces.detector import FaceDetector  # noqa: E402
from fantasyportrait_core.faces.landmarks import LandmarkModel  # noqa: E402
from fantasyportrait_core.motion.encoder import MotionEncoder  # noqa: E402
from fantasyportrait_core.video import DrivingFrames, write_video  # noqa: E402
from media import read_frames  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def looped_clip(path: str, frames: int, fps: float, size=None) -> None:
    """jgz.mp4 played forwards and backwards until ``frames`` frames, optionally resized."""
    import cv2

    src = read_frames(os.path.join(SHARED, "media", "jgz.mp4"))
    cycle = np.concatenate([src, src[::-1]])

    def frames_iter():
        for i in range(frames):
            frame = cycle[i % len(cycle)]
            yield cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC) if size else frame

    write_video(path, frames_iter(), fps)


def released_modules(checkout: str):
    """The released face and PD-FGC modules, imported from a checkout as a package of their own."""
    if importlib.util.find_spec("onnx") is None:  # released create_onnx_session only checks the file with onnx
        onnx = types.ModuleType("onnx")
        onnx.load = lambda path: path
        onnx.checker = types.SimpleNamespace(check_model=lambda model: None)
        sys.modules["onnx"] = onnx
    if importlib.util.find_spec("scipy") is None:
        special = types.ModuleType("scipy.special")

        def softmax(x, axis=None):
            e = np.exp(x - np.max(x, axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)

        special.softmax = softmax
        sys.modules["scipy"] = types.ModuleType("scipy")
        sys.modules["scipy.special"] = special
    if importlib.util.find_spec("tqdm") is None:
        class _Bar:
            def __init__(self, *a, **k):
                pass

            __enter__ = lambda self: self  # noqa: E731
            __exit__ = lambda self, *a: None  # noqa: E731
            update = set_description = lambda self, *a, **k: None  # noqa: E731

        tqdm = types.ModuleType("tqdm")
        tqdm.tqdm = _Bar
        sys.modules["tqdm"] = tqdm
    package = types.ModuleType("released_fp")
    package.__path__ = [os.path.join(checkout, "diffsynth", "models")]
    sys.modules["released_fp"] = package
    return {name: importlib.import_module(f"released_fp.{name}") for name in ("camer", "face_align", "pdf")}


def run_released(mods, clip_path, frames_rgb, models_dir, state):
    import cv2

    timings = {}
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(clip_path)  # released get_emo_feature: every frame of the file
    decoded = []
    ok, frame = cap.read()
    while ok:
        decoded.append(frame.copy())
        ok, frame = cap.read()
    cap.release()
    timings["decode"] = time.perf_counter() - t0
    frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames_rgb]  # the pack's frames, as BGR
    aligner = mods["camer"].CameraDemo(face_alignment_module=mods["face_align"].FaceAlignment(
        gpu_id=None, alignment_model_path=os.path.join(models_dir, "face_landmark.onnx"),
        det_model_path=os.path.join(models_dir, "face_det.onnx")), reset=False)
    encoder = mods["pdf"].FanEncoder()
    encoder.load_state_dict(state, strict=False)
    encoder.eval()
    timings["load"] = time.perf_counter() - t0 - timings["decode"]
    t1 = time.perf_counter()
    landmarks = mods["pdf"].det_landmarks(aligner, frames)[1]
    t2 = time.perf_counter()
    with torch.no_grad():
        emo = mods["pdf"].get_drive_expression_pd_fgc(encoder, frames, landmarks, torch.device("cpu"))
    t3 = time.perf_counter()
    timings.update(track=t2 - t1, encode=t3 - t2)
    feats = torch.cat([torch.cat([e["headpose_emb"], e["eye_embed"], e["emo_embed"], e["mouth_feat"]], 1)
                       for e in emo])
    return np.asarray(landmarks), feats, timings, len(decoded)


def run_pack(clip_path, frames, models_dir, encoder):
    timings = {}
    t0 = time.perf_counter()
    models = FaceModels(FaceDetector(os.path.join(models_dir, "face_det.onnx")),
                        LandmarkModel(os.path.join(models_dir, "face_landmark.onnx")), encoder)
    clip = DrivingFrames(clip_path, length=frames)
    timings["load"] = time.perf_counter() - t0
    done = {}

    def progress(d, total):  # tracking is the first 2/3 of the progress
        if d >= 2 * total // 3 and "track" not in done:
            done["track"] = time.perf_counter()

    t1 = time.perf_counter()
    result = extract_features(clip, models, progress=progress)
    t2 = time.perf_counter()
    timings.update(track=done["track"] - t1, encode=t2 - done["track"])
    return result.tracks.landmarks[0], result.features[0], timings


def speed(args):
    tmp = tempfile.mkdtemp(prefix="bench_extract_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the clips and models made here are large
    clip = os.path.join(tmp, f"single_{args.frames}.mp4")
    looped_clip(clip, args.frames, 25.0)
    torch.manual_seed(0)
    encoder = MotionEncoder().eval()
    state = encoder.state_dict()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.frames} frames of a single-face "
          f"512x512 clip")
    frames = np.stack(list(DrivingFrames(clip, length=args.frames)))
    lmk, feats, ours = run_pack(clip, args.frames, args.models, encoder)
    total_ours = sum(ours.values())
    print("pack:     " + ", ".join(f"{k} {v:.2f} s" for k, v in ours.items()) + f"; total {total_ours:.2f} s")
    if not args.released:
        print("(no --released checkout given: the released pipeline was not run)")
        return
    mods = released_modules(args.released)
    rel_lmk, rel_feats, rel, decoded = run_released(mods, clip, frames, args.models, state)
    total_rel = sum(rel.values())
    print("released: " + ", ".join(f"{k} {v:.2f} s" for k, v in rel.items()) + f"; total {total_rel:.2f} s "
          f"(OpenCV decoded all {decoded} frames)")
    same_lmk = rel_lmk.shape == lmk.shape and np.array_equal(rel_lmk.astype(np.float32), lmk)
    rel_err = float((feats - rel_feats).norm() / rel_feats.norm())
    print(f"landmarks bit-exact: {same_lmk} (max diff {np.abs(rel_lmk - lmk).max():.2e} px); features relative "
          f"difference {rel_err:.1e}")
    print(f"ratio (released time / pack time): whole {total_rel / total_ours:.2f}x, tracking "
          f"{rel['track'] / ours['track']:.2f}x, encoder {rel['encode'] / ours['encode']:.2f}x")


def peak_rss(cmd) -> float:
    """Peak RSS (MB) of a command run as a child of a fresh interpreter."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    code, kb = out.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(cmd)} failed")
    return int(kb) / 1024


def memory(args):
    tmp = tempfile.mkdtemp(prefix="bench_extract_mem_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    for name in ("face_det.onnx", "face_landmark.onnx"):
        os.symlink(os.path.join(args.models, name), os.path.join(models, name))
    torch.save(MotionEncoder().state_dict(), os.path.join(models, "pd_fpg.pth"))
    extract = [sys.executable, "-m", "fantasyportrait_tools", "extract", "--models", models,
               "--out", os.path.join(tmp, "f.safetensors")]
    for seconds, frames in ((60, "81"), (10, "0"), (20, "0")):
        clip = os.path.join(tmp, f"clip_{seconds}s.mp4")
        if not os.path.exists(clip):
            looped_clip(clip, 25 * seconds, 25.0, (1920, 1080))
        used = 81 if frames == "81" else 25 * seconds
        t0 = time.perf_counter()
        rss = peak_rss(extract + ["--video", clip, "--frames", frames])
        print(f"{seconds} s 1080p clip ({25 * seconds} frames), {used} frames used: peak RSS {rss:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(SHARED, "models"))
    ap.add_argument("--released", metavar="DIR", help="checkout of Fantasy-AMAP/fantasy-portrait")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--memory", action="store_true", help="measure peak RSS on long 1080p clips instead")
    args = ap.parse_args()
    memory(args) if args.memory else speed(args)


if __name__ == "__main__":
    main()
