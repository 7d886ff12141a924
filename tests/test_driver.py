"""One driver's motion as Encode uses it (fantasyportrait_core.tokens.driver): who drives, retiming, fitting the
length, and the driver's face boxes fitted the same way."""

import numpy as np
import pytest
import torch

from fantasyportrait_core import FantasyPortraitError
from fantasyportrait_core.faces.tracking import FaceTracks
from fantasyportrait_core.tokens.driver import driver_motion


def two_people(frames=17):
    """Person 0 small (20 px), person 1 large (40 px) in every frame; features numbered by person and frame."""
    boxes = np.stack([np.tile(np.array(box, np.float32), (frames, 1)) for box in ([0, 0, 20, 20], [30, 0, 70, 40])])
    boxes[1, :, 0] += np.arange(frames)  # person 1's box moves: its boxes must follow the frames kept
    tracks = FaceTracks(boxes, np.zeros((2, frames, 222, 2), np.float32), np.ones((2, frames), bool), (64, 96))
    features = (torch.arange(2)[:, None, None] * 1000 + torch.arange(frames)[None, :, None]).float().expand(-1, -1, 554)
    return features, tracks


def test_the_largest_face_drives_unless_a_person_is_given():
    features, tracks = two_people()
    chosen = driver_motion(features, tracks, 25.0, person=-1, frame_fit="trim")
    assert chosen.person == 1 and chosen.notes == []  # 17 frames: already 4k+1, nothing to say
    assert torch.equal(chosen.features, features[1:2]) and np.array_equal(chosen.boxes, tracks.boxes[1])
    other = driver_motion(features, tracks, 25.0, person=0)
    assert other.person == 0 and torch.equal(other.features, features[0:1])
    with pytest.raises(FantasyPortraitError, match="Person 3 was asked for but the driving clip has 2 person"):
        driver_motion(features, tracks, 25.0, person=3)
    with pytest.raises(FantasyPortraitError, match="carry no face tracks, so the largest face is unknown"):
        driver_motion(features, None, 25.0, person=-1)
    alone = driver_motion(features[:1], None, None, person=-1)  # one person without tracks: that one
    assert alone.person == 0 and alone.boxes is None and alone.fps is None


def test_retiming_then_fitting_the_length_moves_features_and_boxes_together():
    features, tracks = two_people()
    # 17 frames at 30 fps -> 8 frames at 15 fps (every other frame) -> trimmed to 5 (4k+1)
    out = driver_motion(features, tracks, 30.0, person=1, retime_to=15.0, frame_fit="trim")
    assert out.fps == 15.0 and out.features.shape == (1, 5, 554)
    assert out.features[0, :, 0].tolist() == [1000.0, 1002.0, 1004.0, 1006.0, 1008.0]
    assert out.boxes[:, 0].tolist() == [30.0, 32.0, 34.0, 36.0, 38.0]
    assert out.notes == ["resampled the driving motion from 30 to 15 fps (8 frames)",
                         "trimmed the driving features from 8 to 5 frames (4k+1)"]
    padded = driver_motion(features, tracks, 30.0, person=1, num_frames=21, frame_fit="pad")
    assert padded.features.shape == (1, 21, 554) and padded.fps == 30.0
    assert padded.features[0, -5:, 0].tolist() == [1016.0] * 5 and padded.boxes[-5:, 0].tolist() == [46.0] * 5
    with pytest.raises(FantasyPortraitError, match="has 17 frames but 21 were asked for; set frame_fit to pad"):
        driver_motion(features, tracks, 30.0, person=1, num_frames=21, frame_fit="trim")
    same = driver_motion(features, tracks, 30.0, person=1, retime_to=30.0)  # the same rate: not retimed
    assert same.features.shape[1] == 17 and same.notes == []
