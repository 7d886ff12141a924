"""The motion check's cost: seconds per output frame, beside the face pipeline it reuses.

One single-face output clip (jgz.mp4, or ``--output``) is measured three ways in one process, each ``--repeat``
times (the median is kept):

* ``extract``: the face pipeline on the output alone (``extract_features``: two tracking passes and the PD-FGC
  encoder), what any check must pay for the output;
* ``eval``: ``fantasyportrait eval``'s work (``check_files``) with the clip as its own driver: the output and the
  driver each through the pipeline, then the metrics;
* ``eval + reference``: the same with the clip as a self-reenactment reference (a third pass, PSNR, SSIM).

It prints seconds per output frame and the ratios to ``extract``: the metrics themselves should cost next to
nothing beside the clips' passes (ratio near 2 for eval, 3 with a reference). The PD-FGC weights are random (the real
file has the same shapes, so the same cost).

Usage: python benchmarks/bench_eval.py [--models DIR] [--output CLIP] [--repeat 3]
Machine noise is large here; compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=os.path.join(os.path.dirname(ROOT), "shared", "models"),
                        help="folder with the released face_det.onnx and face_landmark.onnx")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(ROOT), "shared", "media", "jgz.mp4"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from fantasyportrait_core.evaluation.clips import check_files
    from fantasyportrait_core.motion.extraction import extract_features, load_face_models
    from fantasyportrait_core.video import DrivingFrames
    from motion_weights import motion_state

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("face_det.onnx", "face_landmark.onnx"):
            os.symlink(os.path.join(os.path.abspath(args.models), name), os.path.join(tmp, name))
        torch.save(motion_state(0, he=True), os.path.join(tmp, "pd_fpg.pth"))
        models = load_face_models(tmp)
    frames = len(DrivingFrames(args.output, 0, 0, None))
    runs = {
        "extract": lambda: extract_features(DrivingFrames(args.output, 0, 0, None), models),
        "eval": lambda: check_files(models, args.output, [args.output]),
        "eval + reference": lambda: check_files(models, args.output, [args.output], reference=args.output),
    }
    times = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits every way alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["extract"])
    print(f"{os.path.basename(args.output)}: {frames} output frames, median of {args.repeat}, "
          f"{torch.get_num_threads()} torch threads")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"  {name:18s} {t:6.2f} s  {t / frames:.3f} s per output frame  {t / base:.2f}x extract")


if __name__ == "__main__":
    main()
