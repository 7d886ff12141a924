"""Whole-extraction throughput vs a straightforward per-frame sequential implementation.

Both run in the same process, side by side, on the same frames, with the same (random-weight)
PD-FGC encoder and the released ONNX models:

* pack: sessions created once and reused, all faces tracked, aligned crops encoded in batches;
* sequential: per frame, fresh ONNX sessions for the clip (as the existing port does per run),
  each face's crop encoded alone (batch 1, as the released code does).

Usage: python benchmarks/bench_extract.py [--models DIR] [--media DIR] [--frames N] [--batch-size B]
Prints frames per second for each and their ratio. Numbers vary between runs on a shared machine;
compare the ratio, which is measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fantasyportrait_core import onnx_models  # noqa: E402
from fantasyportrait_core.align import align_face  # noqa: E402
from fantasyportrait_core.extraction import FaceModels, extract_features  # noqa: E402
from fantasyportrait_core.faces import FaceDetector, LandmarkModel  # noqa: E402
from fantasyportrait_core.motion_encoder import MotionEncoder, crops_to_tensor  # noqa: E402
from fantasyportrait_core.tracking import track_faces  # noqa: E402
from fantasyportrait_core.video import read_video  # noqa: E402


def sequential(frames, models_dir, encoder):
    onnx_models._SESSIONS.clear()  # no session reuse across runs
    det = FaceDetector(os.path.join(models_dir, "face_det.onnx"))
    lmk = LandmarkModel(os.path.join(models_dir, "face_landmark.onnx"))
    tracks = track_faces(frames, det, lmk)
    feats = []
    with torch.inference_mode():
        for p in range(tracks.num_persons):
            for f in range(len(frames)):
                crop = align_face(frames[f], tracks.landmarks[p, f])
                feats.append(encoder(crops_to_tensor(crop[None])))
    return torch.cat(feats)


def batched(frames, models_dir, encoder, batch_size):
    models = FaceModels(FaceDetector(os.path.join(models_dir, "face_det.onnx")),
                        LandmarkModel(os.path.join(models_dir, "face_landmark.onnx")), encoder)
    return extract_features(frames, models, batch_size=batch_size).features.reshape(-1, 554)


def main():
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(shared, "models"))
    ap.add_argument("--media", default=os.path.join(shared, "media"))
    ap.add_argument("--frames", type=int, default=49, help="frames per clip (default 49)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the pack's choice for the device")
    args = ap.parse_args()
    torch.manual_seed(0)
    encoder = MotionEncoder().eval()
    plain = MotionEncoder().eval()  # same weights, default memory format, for the sequential run
    plain.load_state_dict(encoder.state_dict())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.frames} frames per clip")
    for name in ("two_person.mp4", "jgz.mp4"):
        frames = read_video(os.path.join(args.media, name), max_frames=args.frames).frames
        onnx_models._SESSIONS.clear()
        batched(frames[:2], args.models, encoder, args.batch_size)  # warm-up (sessions, allocator)
        t0 = time.perf_counter()
        ours = batched(frames, args.models, encoder, args.batch_size)
        t1 = time.perf_counter()
        ref = sequential(frames, args.models, plain)
        t2 = time.perf_counter()
        same = torch.allclose(ours, ref, rtol=1e-3, atol=1e-4)
        fps_ours, fps_ref = len(frames) / (t1 - t0), len(frames) / (t2 - t1)
        print(f"{name}: {len(frames)} frames, {ours.shape[0] // len(frames)} person(s): pack {fps_ours:.1f} fps, "
              f"sequential {fps_ref:.1f} fps, ratio {fps_ours / fps_ref:.2f}x (same features: {same})")


if __name__ == "__main__":
    main()
