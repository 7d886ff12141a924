"""Per-component motion control on real motion (jgz.mp4 through the real face models and a random
PD-FGC encoder: the feature layout is what matters)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fantasyportrait_core import FantasyPortraitError, adapter_from_state_dict
from fantasyportrait_core.tokens.encoding import encode_features
from fantasyportrait_core.motion.features import FEATURE_SLICES
from fantasyportrait_core.motion.control import (ComponentControl, MotionControl, apply_motion_control,
                                                 draw_motion_preview, gaussian_smooth, parse_component)
from media import media_path, model_path

COMPONENTS = list(FEATURE_SLICES)


@pytest.fixture(scope="module")
def motion():
    from fantasyportrait_core.motion.extraction import FaceModels, extract_features
    from fantasyportrait_core.faces.detector import FaceDetector
    from fantasyportrait_core.faces.landmarks import LandmarkModel
    from fantasyportrait_core.motion.encoder import motion_encoder_from_state_dict
    from media import read_frames
    from motion_weights import motion_state

    models = FaceModels(FaceDetector(model_path("face_det.onnx")), LandmarkModel(model_path("face_landmark.onnx")),
                        motion_encoder_from_state_dict(motion_state(he=True)))  # every component moves
    frames = read_frames(media_path("jgz.mp4"), max_frames=33)
    feats = extract_features(frames, models).features
    assert feats.shape == (1, 33, 554)
    return feats


def part(feats, name):
    start, stop = FEATURE_SLICES[name]
    return feats[..., start:stop]


def others_equal(a, b, name):
    return all(torch.equal(part(a, o), part(b, o)) for o in COMPONENTS if o != name)


def test_defaults_change_nothing(motion):
    assert apply_motion_control(motion, MotionControl()) is motion
    same = MotionControl(headpose=ComponentControl("scale", 1.0), mouth=ComponentControl("follow", 2.0))
    assert same.is_identity and torch.equal(apply_motion_control(motion, same), motion)


@pytest.mark.parametrize("name", COMPONENTS)
def test_freeze_holds_one_component_and_leaves_the_others(motion, name):
    assert part(motion, name).std(dim=1).max() > 0  # the driven component moves
    out = apply_motion_control(motion, MotionControl(**{name: ComponentControl("freeze")}))
    assert torch.equal(part(out, name), part(motion, name)[:, :1].expand_as(part(out, name)))
    assert others_equal(out, motion, name)
    ref = apply_motion_control(motion, MotionControl(**{name: ComponentControl("freeze")}, reference_frame=7))
    assert torch.equal(part(ref, name)[:, 20], part(motion, name)[:, 7])


@pytest.mark.parametrize("name", COMPONENTS)
def test_scale_one_is_identity_scale_zero_is_freeze(motion, name):
    assert torch.equal(apply_motion_control(motion, MotionControl(**{name: ComponentControl("scale", 1.0)})), motion)
    zero = apply_motion_control(motion, MotionControl(**{name: ComponentControl("scale", 0.0)}))
    freeze = apply_motion_control(motion, MotionControl(**{name: ComponentControl("freeze")}))
    assert torch.equal(zero, freeze)
    half = apply_motion_control(motion, MotionControl(**{name: ComponentControl("scale", 0.5)}))
    moved = (part(motion, name) - part(motion, name)[:, :1]).norm()
    assert (part(half, name) - part(half, name)[:, :1]).norm() / moved == pytest.approx(0.5, rel=1e-4)
    assert others_equal(half, motion, name)


@pytest.mark.parametrize("name", COMPONENTS)
def test_smoothing_calms_jitter_without_shifting_timing(motion, name):
    out = apply_motion_control(motion, MotionControl(**{name: ComponentControl(smooth=2.0)}))
    steps = lambda f: (part(f, name)[:, 1:] - part(f, name)[:, :-1]).abs().mean()  # noqa: E731
    assert steps(out) < 0.6 * steps(motion)
    assert others_equal(out, motion, name)
    # no shift: per feature, the cross-correlation of driven and smoothed motion peaks at lag 0
    a = part(motion, name)[0].double()
    b = part(out, name)[0].double()
    a, b = a - a.mean(0), b - b.mean(0)
    moving = a.std(0) > 1e-6 * a.std(0).max()
    lags = range(-4, 5)
    corr = torch.stack([(torch.roll(b, lag, 0)[4:-4] * a[4:-4]).sum(0) for lag in lags])  # [lags, D]
    assert (corr[:, moving].argmax(0) == 4).float().mean() > 0.95
    # and a single motion peak stays on its frame
    bump = torch.exp(-0.5 * ((torch.arange(33.0) - 20) / 1.5) ** 2)[:, None].repeat(1, 3)
    assert int(gaussian_smooth(bump, 3.0)[:, 0].argmax()) == 20


def test_per_person_control_changes_only_that_persons_windows(motion, tiny_adapter_state):
    from checkpoint_factory import flatten

    encoder = adapter_from_state_dict(flatten(tiny_adapter_state)).encoder
    two = torch.cat([motion, motion.flip(1)])  # two drivers with different motion
    edited = apply_motion_control(two, MotionControl(headpose=ComponentControl("freeze"),
                                                     mouth=ComponentControl("scale", 1.5)), persons=[1])
    base, out = encode_features(encoder, two), encode_features(encoder, edited)
    assert torch.equal(out.windows[0], base.windows[0])
    assert not torch.allclose(out.windows[1], base.windows[1])
    with pytest.raises(FantasyPortraitError, match="Person 2 is not in the features"):
        apply_motion_control(two, MotionControl(eye=ComponentControl("freeze")), persons=[2])


def test_bad_settings_are_refused(motion):
    with pytest.raises(FantasyPortraitError, match="not one of follow, freeze, scale"):
        ComponentControl("wobble")
    with pytest.raises(FantasyPortraitError, match="finite"):
        ComponentControl("scale", float("nan"))
    with pytest.raises(FantasyPortraitError, match="width 500, expected 554"):
        apply_motion_control(motion[..., :500], MotionControl(eye=ComponentControl("freeze")))
    with pytest.raises(FantasyPortraitError, match="Reference frame 40 is outside the clip"):
        apply_motion_control(motion, MotionControl(eye=ComponentControl("freeze"), reference_frame=40))
    assert parse_component("scale:0.5,smooth:2") == ComponentControl("scale", 0.5, 2.0)
    assert parse_component("freeze") == ComponentControl("freeze")
    with pytest.raises(FantasyPortraitError, match="use follow, freeze or scale:AMOUNT"):
        parse_component("scale:lots")


def test_preview_plots_each_component_before_and_after(motion):
    out = apply_motion_control(motion, MotionControl(headpose=ComponentControl("freeze")))
    image = draw_motion_preview(motion[0], out[0])
    assert image.shape == (440, 640, 3) and image.dtype == np.uint8
    head, mouth = image[26:100], image[3 * 110 + 26:3 * 110 + 100]
    blue = lambda img: ((img[..., 2] > 200) & (img[..., 0] < 120)).sum()  # noqa: E731  (head pose colour)
    magenta = lambda img: ((img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] > 140)).sum()  # noqa: E731
    assert magenta(mouth) > 200  # the mouth follows: its curve is drawn over the panel
    frozen_row = head[head.shape[0] - 1 - 3:]  # a frozen head is a flat line on the panel's zero line
    assert blue(frozen_row) > 300 and blue(head[:-4]) < 50


def test_encode_cli_motion_control_and_preview(motion, tmp_path, tiny_adapter_state):
    import cv2

    from checkpoint_factory import save_ckpt
    from fantasyportrait_tools.cli import main

    feats = tmp_path / "feats.safetensors"
    save_file({"features": motion.contiguous()}, str(feats))
    ckpt = save_ckpt(tmp_path / "fantasyportrait_model.ckpt", tiny_adapter_state)
    plain, still = tmp_path / "plain.safetensors", tmp_path / "still.safetensors"
    assert main(["encode", "--adapter", str(ckpt), "--features", str(feats), "--out", str(plain)]) == 0
    assert main(["encode", "--adapter", str(ckpt), "--features", str(feats), "--out", str(still), "--head", "freeze",
                 "--emotion", "scale:1.2,smooth:1", "--motion-preview", str(tmp_path / "m.png")]) == 0
    a, b = load_file(plain)["tokens"], load_file(still)["tokens"]
    assert a.shape == b.shape and not torch.equal(a, b)
    assert cv2.imread(str(tmp_path / "m.png")).shape == (440, 640, 3)
    assert main(["encode", "--adapter", str(ckpt), "--features", str(feats), "--out", str(still), "--mouth",
                 "scale:x"]) == 2
