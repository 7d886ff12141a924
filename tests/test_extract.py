"""The extraction pipeline and ``fantasyportrait extract`` on real media (random encoder weights)."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fantasyportrait_core import FantasyPortraitError
from fantasyportrait_tools.cli import main
from fantasyportrait_core.motion.extraction import FaceModels, extract_features
from fantasyportrait_core.faces.detector import FaceDetector
from fantasyportrait_core.faces.landmarks import LandmarkModel
from fantasyportrait_core.video import resample_indices, write_video
from media import media_path, model_path, preview_frames, read_frames
from test_motion_encoder import random_state


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name in ("face_det.onnx", "face_landmark.onnx"):
        os.symlink(model_path(name), d / name)
    torch.save(random_state(), d / "pd_fpg.pth")
    return d


def test_extract_cli_two_person(models_dir, tmp_path, capsys):
    out = tmp_path / "feats.safetensors"
    prev = tmp_path / "preview.mp4"
    assert main(["extract", "--video", media_path("two_person.mp4"), "--models", str(models_dir), "--out", str(out),
                 "--max-frames", "9", "--preview", str(prev)]) == 0
    err = capsys.readouterr().err
    assert "person 0: not found in 2 of 9 frames (frames 0-1)" in err
    data = load_file(out)
    assert data["features"].shape == (2, 9, 554) and data["features"].dtype == torch.float32
    assert data["boxes"].shape == (2, 9, 4) and data["landmarks"].shape == (2, 9, 222, 2)
    assert data["valid"].dtype == torch.bool and data["valid"].sum().item() == 16
    with safe_open(out, "pt") as fh:
        meta = fh.metadata()
    assert meta["fps"] == "23" and meta["num_frames"] == "9" and meta["num_persons"] == "2"
    clip = read_frames(str(prev))
    assert clip.shape[0] == 9 and clip.shape[1:3] == (720, 1280)


def test_extract_cli_two_videos_common_length_and_fps(models_dir, tmp_path, capsys):
    out = tmp_path / "feats.safetensors"
    assert main(["extract", "--video", media_path("jgz.mp4"), "--video", media_path("two_person.mp4"),
                 "--models", str(models_dir), "--out", str(out), "--max-frames", "6", "--fps", "10",
                 "--persons", "1"]) == 0
    data = load_file(out)
    assert data["features"].shape == (2, 6, 554)  # one person from each video
    with safe_open(out, "pt") as fh:
        meta = fh.metadata()
    assert meta["fps"] == "10" and meta["persons_per_source"] == "[1, 1]"


def test_features_do_not_depend_on_batch_size(models_dir):
    models = FaceModels(FaceDetector(str(models_dir / "face_det.onnx")),
                        LandmarkModel(str(models_dir / "face_landmark.onnx")))
    from fantasyportrait_core.motion.encoder import motion_encoder_from_state_dict
    models.motion_encoder = motion_encoder_from_state_dict(random_state())
    frames = read_frames(media_path("jgz.mp4"), max_frames=5)
    first = extract_features(frames, models, batch_size=5)
    a, b = first.features, extract_features(frames, models, batch_size=2).features
    assert a.shape == (1, 5, 554)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    tracks = first.tracks
    preview = preview_frames(frames, tracks)
    assert preview.shape == frames.shape and (preview != frames).any()
    small = preview_frames(frames, tracks, max_side=128)  # the node's preview: long side <= 512, frame by frame
    import cv2

    assert small.shape == (5, 128, 128, 3) and small.dtype == np.uint8
    plain = cv2.resize(frames[0], (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(small[0].astype(int) - plain).max() > 100  # the boxes and landmarks are drawn
    with pytest.raises(FantasyPortraitError, match="single frame"):
        extract_features(frames[:1], models)


def test_bad_videos(models_dir, tmp_path, capsys):
    def run(video):
        return main(["extract", "--video", str(video), "--models", str(models_dir), "--out", str(tmp_path / "o.st")])

    assert run(tmp_path / "nope.mp4") == 2
    assert "Driving video not found" in capsys.readouterr().err
    (tmp_path / "corrupt.mp4").write_bytes(b"PK\x03\x04" + bytes(4092))  # e.g. a zip renamed
    assert run(tmp_path / "corrupt.mp4") == 2
    err = capsys.readouterr().err
    assert "corrupt.mp4 is not a video file FFmpeg can read (4096 bytes, starting with b'PK\\x03\\x04" in err
    assert "Errno" not in err
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert run(tmp_path / "empty.mp4") == 2
    assert "empty.mp4 is empty (0 bytes)" in capsys.readouterr().err
    whole = open(media_path("jgz.mp4"), "rb").read()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 3])  # an interrupted download
    assert run(tmp_path / "cut.mp4") == 2
    err = capsys.readouterr().err
    assert "cut.mp4" in err and ("is incomplete" in err or "damaged or incomplete" in err), err
    write_video(str(tmp_path / "blank.mp4"), np.full((6, 128, 160, 3), 90, np.uint8), 10)
    assert run(tmp_path / "blank.mp4") == 2
    assert "No face was found in any of the 6 frames of blank.mp4" in capsys.readouterr().err
    write_video(str(tmp_path / "one.mp4"), read_frames(media_path("jgz.mp4"), max_frames=1), 10)
    assert run(tmp_path / "one.mp4") == 2
    assert "single frame" in capsys.readouterr().err
    assert main(["extract", "--video", media_path("jgz.mp4"), "--models", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o.st")]) == 2
    assert "Models folder not found" in capsys.readouterr().err


def test_resample_indices():
    assert resample_indices(10, 30.0, 15.0).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(4, 10.0, 25.0).tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]
    assert resample_indices(0, 10.0, 25.0).tolist() == []


def test_extract_output_feeds_encode(models_dir, tmp_path, tiny_adapter_state):
    from checkpoint_factory import save_ckpt

    feats = tmp_path / "feats.safetensors"
    assert main(["extract", "--video", media_path("jgz.mp4"), "--models", str(models_dir), "--out", str(feats),
                 "--max-frames", "7"]) == 0
    ckpt = save_ckpt(tmp_path / "fantasyportrait_model.ckpt", tiny_adapter_state)
    out = tmp_path / "tokens.safetensors"
    assert main(["encode", "--adapter", str(ckpt), "--features", str(feats), "--out", str(out), "--fit", "trim"]) == 0
    data = load_file(out)
    assert data["tokens"].shape == (1, 5 * 24, 32) and data["windows"].shape == (1, 2, 97, 32)


# ---------------------------------------------------------------------------------------------
# driving clips read lazily: the frame window, retiming, audio, and the tracker's second pass

def test_driving_frames_window_and_retiming():
    from fantasyportrait_core.video import DrivingFrames

    path = media_path("jgz.mp4")  # 59 frames at 15 fps
    whole = read_frames(path)
    assert whole.shape[0] == 59
    clip = DrivingFrames(path)  # released default: at most 81 frames
    assert (len(clip), clip.fps, clip.source_frames) == (59, 15.0, 59)
    window = DrivingFrames(path, start=10, length=9)
    assert np.array_equal(window[:], whole[10:19]) and window.start_seconds == pytest.approx(10 / 15)
    assert np.array_equal(window[3], whole[13]) and np.array_equal(window[2:4], whole[12:14])
    retimed = DrivingFrames(path, start=4, length=9, fps=25.0)  # 15 -> 25 fps repeats frames (nearest)
    idx = resample_indices(59, 15.0, 25.0)[4:13]
    assert retimed.fps == 25.0 and np.array_equal(retimed[:], whole[idx])
    assert len(DrivingFrames(path, length=0)) == 59 and len(DrivingFrames(path, fps=25.0, length=0)) == 98
    # iterating twice decodes the same frames again (nothing is kept between iterations)
    assert all(np.array_equal(a, b) for a, b in zip(window, window[:]))
    with pytest.raises(FantasyPortraitError, match="start_frame 59 is past the end of jgz.mp4, which has 59 frames"):
        DrivingFrames(path, start=59)


def test_a_trim_window_and_a_crop_give_exactly_those_frames_and_pixels():
    """A host's trim window (1.0 s on, for 1.2 s: frames 15-32 of jgz.mp4 by their timestamps) and crop (400x360
    at 40, 90), then start_frame 2 and 9 frames: frames 17-25, cropped; the audio starts 2 frames into the window."""
    from fantasyportrait_core.video import DrivingFrames, crop_rect

    path = media_path("jgz.mp4")
    whole = read_frames(path)
    clip = DrivingFrames(path, start=2, length=9, window=(1.0, 1.2), crop=(40, 90, 400, 360))
    assert clip.size == (400, 360) and clip.rotation == 0 and len(clip) == 9
    assert np.array_equal(clip[:], whole[17:26, 90:450, 40:440])
    assert clip.start_seconds == pytest.approx(1.0 + 2 / 15)
    assert len(DrivingFrames(path, length=0, window=(1.0, 1.2))) == 18  # 1.2 s at 15 fps
    assert len(DrivingFrames(path, length=0, window=(3.0, 0.0))) == 14  # duration 0: to the end (frames 45-58)
    with pytest.raises(FantasyPortraitError, match="has no frame in its trim window \\(9 s for 1 s\\)"):
        DrivingFrames(path, window=(9.0, 1.0))
    # the host's crop rule: the corner clamped and made even, the size clamped and made even; the whole frame = none
    assert crop_rect((41, 91, 401, 361), 512, 512) == (40, 90, 400, 360)
    assert crop_rect((500, 0, 100, 100), 512, 512) == (500, 0, 12, 100)
    assert crop_rect((0, 0, 512, 512), 512, 512) is None and crop_rect((0, 0, 0, 10), 512, 512) is None


def test_audio_of_the_used_window():
    from fantasyportrait_core.video import read_audio

    path = media_path("jgz.mp4")
    full = read_audio(path, 0.0)
    rate = full["sample_rate"]
    part = read_audio(path, 0.5, 1.0)
    assert full["waveform"].shape[:2] == (1, 2) and rate == 44100
    assert part["waveform"].shape == (1, 2, rate)
    first = int(round(0.5 * rate))
    torch.testing.assert_close(part["waveform"], full["waveform"][..., first:first + rate], rtol=0, atol=0)
    assert read_audio(media_path("two_person.mp4"), 0.0) is None  # a clip without sound


def test_second_tracking_pass_reuses_the_first_pass_detections(models_dir):
    from fantasyportrait_core.faces.tracking import track_faces
    from fantasyportrait_core.video import DrivingFrames

    det = FaceDetector(str(models_dir / "face_det.onnx"))
    lmk = LandmarkModel(str(models_dir / "face_landmark.onnx"))
    calls = {"detect": 0, "refine": 0}
    detect, refine = det.detect, lmk.refine

    def counted_detect(frame):
        calls["detect"] += 1
        return detect(frame)

    def counted_refine(frame, **kw):
        calls["refine"] += 1
        return refine(frame, **kw)

    frames = DrivingFrames(media_path("jgz.mp4"), length=13)
    det.detect, lmk.refine = counted_detect, counted_refine
    tracks = track_faces(frames, det, lmk)
    det.detect, lmk.refine = detect, refine
    # pass 1: 13 detections, 13 fits from the box + 12 from the previous frame; pass 2: 1 fit from the
    # seed box + 12 from the previous frame, and no detection
    assert calls == {"detect": 13, "refine": 13 + 12 + 1 + 12}
    assert np.array_equal(tracks.landmarks, track_faces(np.stack(list(frames)), det, lmk).landmarks)


def test_extract_cli_frame_window(models_dir, tmp_path, capsys):
    out = tmp_path / "feats.safetensors"
    prev = tmp_path / "preview.mp4"
    assert main(["extract", "--video", media_path("jgz.mp4"), "--models", str(models_dir), "--out", str(out),
                 "--start", "20", "--frames", "9", "--preview", str(prev)]) == 0
    data = load_file(out)
    with safe_open(out, "pt") as fh:
        meta = fh.metadata()
    assert data["features"].shape == (1, 9, 554) and (meta["start_frame"], meta["fps"]) == ("20", "15")
    assert read_frames(str(prev)).shape[:3] == (9, 512, 512)
    capsys.readouterr()
    assert main(["extract", "--video", media_path("jgz.mp4"), "--models", str(models_dir), "--out", str(out),
                 "--frames", "10"]) == 2
    assert "--frames must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 10: use 9 or 13" in \
        capsys.readouterr().err


def test_crops_and_preview_in_one_pass_equal_the_separate_ones(models_dir):
    from fantasyportrait_core.faces.tracking import track_faces
    from fantasyportrait_core.motion.extraction import aligned_crops, crops_and_preview
    from fantasyportrait_core.video import DrivingFrames

    class Counted(DrivingFrames):
        passes = 0

        def __iter__(self):
            Counted.passes += 1
            return super().__iter__()

    clip = Counted(media_path("two_person.mp4"), length=5)
    tracks = track_faces(np.stack(list(clip)), FaceDetector(str(models_dir / "face_det.onnx")),
                         LandmarkModel(str(models_dir / "face_landmark.onnx")))
    Counted.passes = 0
    crops, preview = crops_and_preview(clip, tracks, max_side=512)
    assert Counted.passes == 1  # the clip is decoded once for both
    assert np.array_equal(crops, aligned_crops(clip, tracks))
    assert np.array_equal(preview, preview_frames(clip, tracks, max_side=512)) and preview.shape == (5, 288, 512, 3)
    # a long clip's preview: at most preview_frames frames, spread from the first to the last, drawn as before
    few_crops, few = crops_and_preview(clip, tracks, max_side=512, preview_frames=3)
    assert np.array_equal(few_crops, crops) and few.shape == (3, 288, 512, 3)
    assert np.array_equal(few, preview[[0, 2, 4]])
