"""The extraction pipeline and ``fantasyportrait extract`` on real media (random encoder weights)."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fantasyportrait_core import FantasyPortraitError
from fantasyportrait_core.cli import main
from fantasyportrait_core.extraction import FaceModels, draw_preview, extract_features
from fantasyportrait_core.faces import FaceDetector, LandmarkModel
from fantasyportrait_core.video import read_video, resample_indices, write_video
from media import media_path, model_path
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
    clip = read_video(str(prev))
    assert clip.frames.shape[0] == 9 and clip.frames.shape[1:3] == (720, 1280)


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
    from fantasyportrait_core.motion_encoder import motion_encoder_from_state_dict
    models.motion_encoder = motion_encoder_from_state_dict(random_state())
    frames = read_video(media_path("jgz.mp4"), max_frames=5).frames
    a = extract_features(frames, models, batch_size=5).features
    b = extract_features(frames, models, batch_size=2).features
    assert a.shape == (1, 5, 554)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    tracks = extract_features(frames, models).tracks
    preview = draw_preview(frames, tracks)
    assert preview.shape == frames.shape and (preview != frames).any()
    small = draw_preview(frames, tracks, max_side=128)  # the node's preview: long side <= 512, frame by frame
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
    write_video(str(tmp_path / "one.mp4"), read_video(media_path("jgz.mp4"), max_frames=1).frames, 10)
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
