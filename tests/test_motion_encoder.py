"""PD-FGC motion encoder: released module names, strict loading, batching, feature layout."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fantasyportrait_core import CheckpointError
from fantasyportrait_core_shim import motion_state
from fantasyportrait_core.motion_encoder import (MotionEncoder, crops_to_tensor, load_motion_encoder,
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
