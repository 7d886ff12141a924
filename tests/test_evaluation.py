"""The motion check (``fantasyportrait eval``, the Motion Check node's core) on real media: the released face models and
a fixed random PD-FGC encoder (He-scaled, so every component moves with the face)."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import ROOT
from fantasyportrait_core import FantasyPortraitError
from media import media_path, model_path, read_frames
from motion_weights import motion_state

N = 33  # frames of jgz.mp4 used (15 fps, 2.2 s)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name in ("face_det.onnx", "face_landmark.onnx"):
        os.symlink(model_path(name), d / name)
    torch.save(motion_state(0, he=True), d / "pd_fpg.pth")
    return d


@pytest.fixture(scope="module")
def models(models_dir):
    from fantasyportrait_core.motion.extraction import load_face_models

    return load_face_models(str(models_dir))


@pytest.fixture(scope="module")
def jgz():
    return read_frames(media_path("jgz.mp4"))  # 59 frames, 512x512


def features(frames, models, fps=15.0, name="clip"):
    from fantasyportrait_core.motion.extraction import extract_features

    return extract_features(frames, models, fps=fps, source=name)


@pytest.fixture(scope="module")
def driver(jgz, models):
    return features(jgz[:N], models, name="jgz")


def check(output, drivers, mapping="", reference=None):
    from fantasyportrait_core.evaluation.report import evaluate

    return evaluate(output, drivers, [f"driver {k + 1}" for k in range(len(drivers))], mapping, reference)


KEYS = ("head_pose_error", "eye_error", "expression_error")


def test_a_clip_against_itself_scores_perfectly(driver, jgz):
    from fantasyportrait_core.evaluation.reference import frame_scores

    report = check(driver, [driver], reference=driver)
    (p,) = report["persons"]
    assert [p[k] for k in KEYS] == [0.0, 0.0, 0.0]
    assert p["lmd"] == 0.0 and p["offset"] == 0 and report["leakage"] == [[pytest.approx(1.0)]]
    assert p["mouth_open_corr"] == pytest.approx(1.0) and p["motion_corr"] == pytest.approx(1.0)
    assert p["jitter"] == p["jitter_driver"] > 0
    assert min(p["still"][k] for k in KEYS) > 5  # a face that does not move scores far from 0
    scores, count, resized = frame_scores(jgz[:N], jgz[:N])
    assert scores == {"psnr": 100.0, "ssim": pytest.approx(1.0)} and count == N and not resized
    json.dumps(report)  # JSON-ready as it is


def test_a_clip_shifted_by_5_frames_has_offset_5(driver, jgz, models):
    """Output frame i shows driver frame i + 5: the offset is found, the scores at offset 0 are far worse than at
    the offset, and at the offset they are near a clip's against itself. The other way round gives -5."""
    ahead = check(features(jgz[5:5 + N], models), [features(jgz[:N + 5], models)])["persons"][0]
    assert ahead["offset"] == 5
    for k in KEYS:
        assert ahead[k] > 3 * ahead["at_offset"][k], k
        assert ahead["at_offset"][k] < 0.3 * ahead["still"][k], k
    assert ahead["mouth_open_corr"] < 0.5 < 0.99 < ahead["at_offset"]["mouth_open_corr"]
    behind = check(features(np.concatenate([jgz[:1].repeat(5, 0), jgz[:N - 5]]), models), [driver])
    assert behind["persons"][0]["offset"] == -5


def test_a_reencoded_lower_quality_copy_scores_small_non_zero_errors(driver, jgz, models, tmp_path):
    from fantasyportrait_core.evaluation.reference import frame_scores
    from fantasyportrait_core.video import DrivingFrames, write_video

    path = str(tmp_path / "low.mp4")
    write_video(path, jgz[:N], 15.0, crf=35)
    low = features(DrivingFrames(path, 0, 0, None), models)
    (p,) = check(low, [driver], reference=driver)["persons"]
    for k in KEYS:
        assert 0 < p[k] < 0.7 * p["still"][k], k
    assert p["offset"] == 0 and p["mouth_open_corr"] > 0.9 and p["motion_corr"] > 0.8
    assert 0 < p["lmd"] < 0.01  # under 1 % of the face size
    scores, _, _ = frame_scores(DrivingFrames(path, 0, 0, None), jgz[:N])
    assert 28 < scores["psnr"] < 45 and 0.8 < scores["ssim"] < 0.99


def test_another_persons_clip_scores_clearly_worse(driver, models):
    """jgz.mp4 against the example driver (Grace Hopper, other motion, 16 fps retimed to 15): the errors are at a
    still face's level, the correlations near 0, against 0 and 1 for the clip itself."""
    from fantasyportrait_core.video import DrivingFrames

    other = features(DrivingFrames(os.path.join(ROOT, "examples", "driver.mp4"), 0, N, 15.0), models)
    (p,) = check(other, [driver])["persons"]
    for k in KEYS:
        assert p[k] > 0.8 * p["still"][k], k
    assert abs(p["motion_corr"]) < 0.3 and p["mouth_open_corr"] < 0.5


@pytest.fixture(scope="module")
def two(models):
    from fantasyportrait_core.video import DrivingFrames

    return features(DrivingFrames(media_path("two_person.mp4"), 0, 41, None), models, fps=23.0)


def test_swapping_two_drivers_swaps_the_leakage_matrix(two):
    """two_person.mp4 against itself: each face goes with its own driver (diagonal 1) and not with the other's
    (off-diagonal below 0); with the drivers swapped (mapping 2,1) the columns swap, so the high values leave the
    diagonal, and each face's errors are those of the other person's motion."""
    straight = check(two, [two])
    swapped = check(two, [two], mapping="2,1")
    m, s = np.array(straight["leakage"]), np.array(swapped["leakage"])
    assert np.allclose(np.diag(m), 1) and (m[~np.eye(2, dtype=bool)] < 0.2).all()
    assert np.allclose(s, m[:, ::-1])
    assert all(p["expression_error"] == 0 for p in straight["persons"])
    assert all(p["expression_error"] > 0.5 * p["still"]["expression_error"] for p in swapped["persons"])
    assert [p["driver"] for p in swapped["persons"]] == ["driver 1 person 2", "driver 1 person 1"]


def test_one_face_and_a_driver_with_two_people_takes_the_largest(driver, two):
    report = check(driver, [two])
    assert report["persons"][0]["driver"].startswith("driver 1 person ")
    assert "the largest" in report["notes"][0]


def test_clear_errors(driver, two, models, jgz):
    with pytest.raises(FantasyPortraitError, match=r"No face was found in any of the 6 frames of the output"):
        features(np.zeros((6, 256, 256, 3), np.uint8), models, name="the output")
    with pytest.raises(FantasyPortraitError, match=r"The output has 2 face\(s\) but the driver\(s\) have 1 person"):
        check(two, [driver])
    with pytest.raises(FantasyPortraitError, match=r"have 4 frame\(s\) in common at the output's frame rate; at least 5"):
        check(driver, [features(jgz[:4], models)])
    with pytest.raises(FantasyPortraitError, match=r"mapping '1,1' must use each driver"):
        check(two, [two], mapping="1,1")


def test_eval_command_retimes_the_driver_and_writes_json_and_plot(models_dir, jgz, tmp_path, capsys):
    """``fantasyportrait eval`` with a driver at 30 fps (every frame twice): it is retimed to the output's 15 fps, so
    the output is the driver again (within H.264 rounding); the report is written as JSON with the issue's keys and
    drawn as a PNG."""
    from fantasyportrait_core.video import write_video
    from fantasyportrait_tools.cli import main

    out, drv = str(tmp_path / "out.mp4"), str(tmp_path / "drv30.mp4")
    write_video(out, jgz[:N], 15.0)
    write_video(drv, jgz[:N].repeat(2, 0), 30.0)
    report_path, plot = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["eval", "--models", str(models_dir), "--output", out, "--driver", drv, "--reference", out,
                 "--json", str(report_path), "--plot", str(plot)]) == 0
    printed = capsys.readouterr()
    report = json.loads(report_path.read_text())
    (p,) = report["persons"]
    assert {"head_pose_error", "expression_error", "eye_error", "mouth_open_corr", "jitter", "offset", "lmd"} <= set(p)
    assert report["drivers"][0]["retimed"] and "retimed to the output's 15 fps" in printed.out
    assert p["offset"] == 0 and p["mouth_open_corr"] > 0.95 and p["lmd"] == 0.0
    assert report["reference"]["psnr"] == 100.0 and report["compared_frames"] == N
    assert report["identity"]["absent"].startswith("identity similarity not measured: no portrait given")
    assert 0 < report["seconds_per_frame"] < report["seconds"]
    image = read_frames(str(plot))[0]
    assert image.shape[1] == 960 and image.std() > 10  # curves and the matrix drawn


class ArcFaceShaped(torch.nn.Module):
    """A 112x112 face in, a 64-number embedding out (random weights): the shape of insightface's ArcFace models."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Parameter(torch.randn(8, 3, 8, 8, generator=g) * 0.05)
        self.fc = torch.nn.Parameter(torch.randn(64, 8 * 14 * 14, generator=g) * 0.05)

    def forward(self, x):
        return torch.nn.functional.linear(torch.nn.functional.conv2d(x, self.conv, stride=8).flatten(1), self.fc)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx.export's legacy exporter, for the test model
def test_identity_similarity_with_an_arcface_model(models, jgz, tmp_path):
    """An ArcFace-shaped ONNX model (112x112 in, an embedding out; random weights) in a local folder: found, each
    face aligned to ArcFace's template; the portrait against itself gives 1. Without a folder, absent."""
    pytest.importorskip("onnx", reason="writing the test's ONNX model needs the onnx package (requirements-dev)")
    from fantasyportrait_core.evaluation.clips import add_identity, portrait_landmarks
    from fantasyportrait_core.evaluation.identity import ArcFace, find_arcface, five_points

    torch.onnx.export(ArcFaceShaped(), torch.zeros(1, 3, 112, 112), str(tmp_path / "w600k_r50.onnx"), dynamo=False,
                      input_names=["input.1"])
    assert find_arcface(str(tmp_path)) == str(tmp_path / "w600k_r50.onnx")
    (lmk,) = portrait_landmarks(jgz[0], models)
    pts = five_points(lmk)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # eyes and mouth corners left to right
    still = features(jgz[:1].repeat(6, 0), models)
    report = check(still, [still])
    add_identity(report, jgz[:1].repeat(6, 0), still, jgz[0], models, str(tmp_path))
    assert report["identity"] == {"model": "w600k_r50.onnx"}
    assert report["persons"][0]["identity"] == pytest.approx(1.0, abs=1e-3)
    report = check(still, [still])
    add_identity(report, jgz[:1].repeat(6, 0), still, jgz[0], models, None)
    assert "no ArcFace model folder given" in report["identity"]["absent"]
    with pytest.raises(FantasyPortraitError, match="is it an ArcFace recognition model"):
        ArcFace(model_path("face_landmark.onnx"))
