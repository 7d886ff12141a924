"""FantasyPortrait Motion Check in a real ComfyUI (run by tests/test_in_host.py with the host's Python), fed as in a
graph: the driver through the Face Tracker and the Expression Extractor, the output as IMAGE or as core's VIDEO."""

import json

import numpy as np
import pytest

from inproc_fixtures import H, error_of, faces  # noqa: F401 (fixtures)
from media import media_path, read_frames


@pytest.fixture(scope="module")
def models(H, faces):
    """The released face models with a fixed random PD-FGC encoder (He-scaled: every component moves)."""
    import dataclasses

    from motion_weights import motion_state

    from fantasyportrait_pack.fantasyportrait_core.motion.encoder import motion_encoder_from_state_dict

    return dataclasses.replace(faces, motion_encoder=motion_encoder_from_state_dict(motion_state(0, he=True)))


@pytest.fixture(scope="module")
def driver(H, models):
    """jgz.mp4's first 17 frames (15 fps) through the Face Tracker and the Expression Extractor."""
    from comfy_api.input_impl import VideoFromFile

    tracks = H.fp.FantasyPortraitFaceTracker(models, 96, 0, video=VideoFromFile(media_path("jgz.mp4")), length=17)[0]
    return H.fp.FantasyPortraitExpressionExtractor(models, tracks)[0]


def test_the_driving_frames_as_output_follow_their_driver_exactly(H, models, driver):
    """The driving frames themselves as the output (IMAGE, the driver's fps): no error, correlations 1, offset 0, a
    plot IMAGE and the JSON of the report."""
    images = H.torch.from_numpy(read_frames(media_path("jgz.mp4"), 17)).float() / 255
    report, plot, report_json = H.fp.FantasyPortraitMotionCheck(models, driver, images=images)
    data = json.loads(report_json)
    (p,) = data["persons"]
    assert (p["head_pose_error"], p["eye_error"], p["expression_error"], p["offset"]) == (0.0, 0.0, 0.0, 0)
    assert p["mouth_open_corr"] == pytest.approx(1.0) and data["leakage"] == [[pytest.approx(1.0)]]
    assert data["fps"] == 15.0 and data["compared_frames"] == 17
    assert report.startswith("FantasyPortrait motion check: 17 output frames at 15 fps, 1 face(s)")
    assert "face 1 <- the driver:" in report and "identity similarity not measured" in report
    assert list(plot.shape)[0::3] == [1, 3] and plot.shape[2] == 960 and 0 <= float(plot.min()) < float(plot.max()) <= 1


def test_a_video_output_at_another_rate_is_read_from_its_file_and_aligned_by_time(H, models, driver, tmp_path):
    """The output as core's VIDEO at 7.5 fps (every second driving frame): read from its file, the driver retimed to
    7.5 fps (said in the report), offset 0 and the motion following, within H.264 rounding."""
    from comfy_api.input_impl import VideoFromFile

    from fantasyportrait_pack.fantasyportrait_core.video import write_video

    path = str(tmp_path / "half.mp4")
    write_video(path, read_frames(media_path("jgz.mp4"), 17)[::2], 7.5)
    report, _, report_json = H.fp.FantasyPortraitMotionCheck(models, driver, video=VideoFromFile(path))
    data = json.loads(report_json)
    (p,) = data["persons"]
    assert data["fps"] == 7.5 and data["frames"] == 9
    assert "driver 1 was retimed to the output's 7.5 fps" in data["notes"] and "note: driver 1 was retimed" in report
    assert p["offset"] == 0 and p["mouth_open_corr"] > 0.9
    assert p["expression_error"] < 0.5 * p["still"]["expression_error"]


def test_a_wiring_mistake_stops_the_prompt_and_what_the_output_holds_is_reported(H, models, driver):
    """No output connected: an error naming what to connect. An output without a face, or with two faces for one
    driver: the report says why nothing was measured (after a long render the prompt does not fail on its check),
    and the plot shows the same words."""
    torch, check = H.torch, H.fp.FantasyPortraitMotionCheck
    assert "Connect the output to FantasyPortrait Motion Check: images (from VAE Decode) or video" in \
        error_of(lambda: check(models, driver))
    report, plot, report_json = check(models, driver, images=torch.full((5, 128, 128, 3), 0.5))
    assert report.startswith("FantasyPortrait motion check: not measured. No face was found in any of the 5 frames "
                             "of the output frames")
    assert json.loads(report_json)["error"].startswith("No face was found") and float(plot.min()) < 0.5
    two = torch.from_numpy(np.concatenate([read_frames(media_path("jgz.mp4"), 9)] * 2, axis=2)).float() / 255
    assert "The output has 2 face(s) but the driver(s) have 1 person(s)" in check(models, driver, images=two)[0]
