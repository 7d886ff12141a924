"""The example inputs the pack ships (examples/): small, attributed, and real inputs for the released face pipeline:
every clip's faces are found and tracked in every frame, and they move (the jaw opens and closes, the head turns)."""

import os

import numpy as np
import pytest

from conftest import ROOT
from media import model_path, read_frames

EXAMPLES = os.path.join(ROOT, "examples")


def test_every_example_is_small_attributed_and_used():
    from fantasyportrait_tools.example_inputs import BY_WORKFLOW, FILES
    from fantasyportrait_tools import SHIPPED

    on_disk = sorted(f for f in os.listdir(EXAMPLES) if f != "README.md")
    assert on_disk == FILES  # no file that no workflow uses, none missing
    assert sorted(BY_WORKFLOW) == sorted(SHIPPED.values())  # every shipped workflow has its example
    with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    for name in FILES:
        assert os.path.getsize(os.path.join(EXAMPLES, name)) < 2 << 20, name
        assert f"`{name}`" in readme, f"examples/README.md does not describe {name}"
    for source in ("public domain", "NASA", "U.S. Navy", "astronaut.png", "grace_hopper.jpg"):
        assert source in readme


@pytest.mark.parametrize("name, size", [("driver.mp4", (512, 512)), ("driver_2.mp4", (512, 512)),
                                        ("two_people_driver.mp4", (768, 512))])
def test_clips_decode_at_16_fps_longer_than_one_chunk(name, size):
    from fantasyportrait_core.video import DrivingFrames

    clip = DrivingFrames(os.path.join(EXAMPLES, name), 0, 0, None)
    frames = np.stack(list(clip))
    assert frames.shape == (97, size[1], size[0], 3)  # 4k+1 and over one 81-frame chunk: the long graphs run 2
    assert clip.fps == pytest.approx(16.0)


@pytest.fixture(scope="module")
def face_models():
    from fantasyportrait_core.faces.detector import FaceDetector
    from fantasyportrait_core.faces.landmarks import LandmarkModel

    return FaceDetector(model_path("face_det.onnx")), LandmarkModel(model_path("face_landmark.onnx"))


@pytest.mark.parametrize("image, faces", [("portrait.jpg", 1), ("two_people.jpg", 2)])
def test_portraits_have_their_faces(face_models, image, faces):
    from fantasyportrait_core.faces.detector import portrait_faces

    boxes = portrait_faces(read_frames(os.path.join(EXAMPLES, image))[0], face_models[0])
    assert len(boxes) == faces
    assert (boxes[:, 3] - boxes[:, 1]).min() > 120  # large enough to animate (and over the tracker's 96 px)


@pytest.mark.parametrize("name, persons", [("driver.mp4", 1), ("driver_2.mp4", 1), ("two_people_driver.mp4", 2)])
def test_clips_are_tracked_in_every_frame_and_move(face_models, name, persons):
    from fantasyportrait_core.faces.tracking import track_faces

    tracks = track_faces(read_frames(os.path.join(EXAMPLES, name)), *face_models)
    assert tracks.num_persons == persons and tracks.valid.all()
    for p in range(persons):
        points = tracks.landmarks[p]
        mouth = points[:, 118:182, 1]
        opening = mouth.max(1) - mouth.min(1)
        face = np.ptp(points[0, :33, 0])
        assert np.ptp(opening) > 0.05 * face, (name, p)  # the jaw opens and closes
        eyes = points[:, [74, 96]]
        roll = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
        assert np.ptp(roll) > 8, (name, p)  # the head leans one way and the other (about +-7 degrees)
