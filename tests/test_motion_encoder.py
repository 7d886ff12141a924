"""PD-FGC motion encoder: released module names, strict loading, batching, feature layout."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fantasyportrait_core import CheckpointError
from motion_weights import motion_state
from fantasyportrait_core.motion.encoder import (MotionEncoder, crops_to_tensor, load_motion_encoder,
                                                 motion_encoder_from_state_dict)

# a sample of the released pd_fpg.pth key names and shapes
RELEASED_KEYS = {
    "model.conv1.weight": (64, 3, 7, 7),
    "model.conv2.downsample.2.weight": (128, 64, 1, 1),
    "model.m0.b1_4.conv1.weight": (128, 256, 3, 3),
    "model.m0.b2_plus_1.bn3.running_var": (64,),
    "model.m0.b3_1.conv3.weight": (64, 64, 3, 3),
    "model.top_m_0.bn1.num_batches_tracked": (),
    "model.conv_last0.bias": (256,),
    "model.l0.weight": (68, 256, 1, 1),
    "model.bn5.weight": (68,),
    "model.conv6.weight": (1, 68, 3, 3),
    "model.fc.weight": (512, 784),
    "to_mouth.2.running_mean": (512,),
    "to_mouth.3.weight": (512, 512),
    "mouth_embed.1.weight": (500, 512),
    "headpose_embed.1.weight": (6, 512),
    "eye_embed.1.weight": (6, 512),
    "emo_embed.1.weight": (30, 512),
}


def random_state(seed=0):
    return motion_state(seed)


@pytest.fixture(scope="module")
def encoder():
    return motion_encoder_from_state_dict(random_state())


# -- an independent implementation of the released FanEncoder, written as plain functions on the state dict

def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"], False,
                        0.0, 1e-5)


def _conv(sd, p, x, stride=1, padding=None):
    w = sd[p + "weight"]
    return F.conv2d(x, w, sd.get(p + "bias"), stride, w.shape[-1] // 2 if padding is None else padding)


def _block(sd, p, x):
    """Pre-activation block: three BN-ReLU-conv stages concatenated (1/2, 1/4, 1/4 of the output
    channels), plus the input (through a BN-ReLU-1x1 conv when the channel count changes)."""
    a = _conv(sd, p + "conv1.", F.relu(_bn(sd, p + "bn1.", x)))
    b = _conv(sd, p + "conv2.", F.relu(_bn(sd, p + "bn2.", a)))
    c = _conv(sd, p + "conv3.", F.relu(_bn(sd, p + "bn3.", b)))
    skip = x if p + "downsample.0.weight" not in sd else _conv(sd, p + "downsample.2.",
                                                                F.relu(_bn(sd, p + "downsample.0.", x)))
    return torch.cat([a, b, c], 1) + skip


def _hourglass(sd, level, x):
    upper = _block(sd, f"model.m0.b1_{level}.", x)
    lower = _block(sd, f"model.m0.b2_{level}.", F.max_pool2d(x, 2))
    lower = _hourglass(sd, level - 1, lower) if level > 1 else _block(sd, f"model.m0.b2_plus_{level}.", lower)
    lower = _block(sd, f"model.m0.b3_{level}.", lower)
    return upper + F.interpolate(lower, size=upper.shape[-2:], mode="bilinear", align_corners=False)


def _head(sd, p, x):
    h = F.relu(F.linear(x, sd[p + "0.weight"], sd[p + "0.bias"]))
    h = F.batch_norm(h, sd[p + "2.running_mean"], sd[p + "2.running_var"], sd[p + "2.weight"], sd[p + "2.bias"],
                     False, 0.0, 1e-5)
    return F.linear(h, sd[p + "3.weight"], sd[p + "3.bias"])


def reference_fan_encoder(sd, x):
    """[N, 3, 224, 224] in [-1, 1] -> [N, 554]: head pose 6, eyes 6, emotion 30, mouth 512."""
    x = F.relu(_bn(sd, "model.bn1.", _conv(sd, "model.conv1.", x, stride=2, padding=3)))
    x = F.max_pool2d(_block(sd, "model.conv2.", x), 2)
    x = _block(sd, "model.conv4.", _block(sd, "model.conv3.", x))
    x = _block(sd, "model.top_m_0.", _hourglass(sd, 4, x))
    x = _bn(sd, "model.bn_end0.", _conv(sd, "model.conv_last0.", x))
    heat = _conv(sd, "model.l0.", F.relu(x))
    net = _conv(sd, "model.conv6.", F.relu(_bn(sd, "model.bn5.", heat)), stride=2, padding=1)
    net = F.linear(F.relu(net.flatten(1)), sd["model.fc.weight"], sd["model.fc.bias"])
    embed = lambda name, h: F.linear(F.relu(h), sd[f"{name}.1.weight"], sd[f"{name}.1.bias"])  # noqa: E731
    return torch.cat([embed("headpose_embed", _head(sd, "to_headpose.", net)),
                      embed("eye_embed", _head(sd, "to_eye.", net)),
                      embed("emo_embed", _head(sd, "to_emo.", net)), _head(sd, "to_mouth.", net)], 1)


def test_matches_an_independent_implementation_of_the_released_architecture():
    sd = random_state(3)
    model = motion_encoder_from_state_dict(sd)
    crops = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    x = crops_to_tensor(crops)
    with torch.no_grad():
        ours, ref = model(x), reference_fan_encoder(sd, x)
    assert ours.shape == ref.shape == (2, 554)
    assert float((ours - ref).norm() / ref.norm()) < 1e-5
    with torch.no_grad():  # and it is not a trivial agreement: a different state gives a different output
        assert float((reference_fan_encoder(random_state(5), x) - ref).norm() / ref.norm()) > 1e-2


def test_module_names_are_the_released_ones():
    sd = MotionEncoder().state_dict()
    for key, shape in RELEASED_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("model.m0.b2_plus_2") for k in sd)
    assert len(sd) == 387


def test_output_layout_and_batch_independence(encoder):
    crops = np.random.default_rng(1).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    x = crops_to_tensor(crops)
    assert x.min() >= -1 and x.max() <= 1 and x.shape == (5, 3, 224, 224)
    assert x[0, 0, 0, 0].item() == pytest.approx(crops[0, 0, 0, 0] / 255 * 2 - 1)
    with torch.no_grad():
        together = encoder(x)
        alone = torch.cat([encoder(x[i:i + 1]) for i in range(5)])
        mixed = encoder(torch.cat([x[2:3], torch.zeros(3, 3, 224, 224)]))
    assert together.shape == (5, 554)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixed[0], together[2], rtol=1e-4, atol=1e-5)
    # the mouth part is to_mouth's 512-d output, not mouth_embed's 500
    with torch.no_grad():
        mouth = encoder.to_mouth(encoder.model(x[:1]))
    torch.testing.assert_close(together[:1, 42:], mouth, rtol=1e-4, atol=1e-5)


def test_loads_pth_and_single_file_prefix(tmp_path, encoder):
    state = random_state()
    torch.save(state, tmp_path / "pd_fpg.pth")
    a = load_motion_encoder(str(tmp_path / "pd_fpg.pth"))
    single = {"pd_fpg." + k: v for k, v in state.items()}
    single["proj_model.norm.weight"] = torch.ones(4)
    save_file(single, tmp_path / "Wan2_1_FantasyPortrait_fp16.safetensors")
    b = load_motion_encoder(str(tmp_path / "Wan2_1_FantasyPortrait_fp16.safetensors"))
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
        torch.testing.assert_close(a(x), encoder(x), rtol=0, atol=0)


def test_strict_loading_errors(tmp_path):
    state = random_state()
    del state["model.fc.weight"]
    state["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="Missing keys: model.fc.weight.*Unexpected keys: model.extra.weight"):
        motion_encoder_from_state_dict(state, "pd_fpg.pth")
    with pytest.raises(CheckpointError, match="not the PD-FGC motion encoder"):
        motion_encoder_from_state_dict({"proj_model.norm.weight": torch.ones(2)}, "adapter.ckpt")
    bad = random_state()
    bad["model.fc.weight"] = torch.zeros(512, 100)
    with pytest.raises(CheckpointError, match="wrong shape.*model.fc.weight"):
        motion_encoder_from_state_dict(bad)
