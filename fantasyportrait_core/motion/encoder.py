"""The PD-FGC motion encoder (``FanEncoder``) that turns an aligned face into expression features.

Module names match the released ``pd_fpg.pth`` state dict exactly (``model.*`` for the FAN
backbone, ``to_mouth``/``to_headpose``/``to_eye``/``to_emo`` heads, ``*_embed`` projections), so
it loads strictly. Per frame it outputs head pose 6, eyes 6, emotion 30 and the 512-d mouth
feature (the output of ``to_mouth``; ``mouth_embed`` is in the weights but unused).

Input: aligned 224x224 RGB crops scaled to [-1, 1], ``[N, 3, 224, 224]``; frames are
independent (BatchNorm in eval mode), so any batch size gives the same per-frame result.

Convolutions and linear layers come from ``operations`` (``torch.nn`` by default; inside ComfyUI its
``comfy.ops``, as ComfyUI's own models take them); BatchNorm, which ``comfy.ops`` does not provide, is torch's.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_strict, read_state_dict, sub_state
from ..errors import CheckpointError

MOTION_ENCODER_PREFIX = "pd_fpg."  # the motion encoder inside the single-file FantasyPortrait safetensors


def _conv3x3(cin, cout, operations):
    return operations.Conv2d(cin, cout, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation block: three 3x3 convs (out/2, out/4, out/4) concatenated, plus residual."""

    def __init__(self, cin: int, cout: int, operations=nn):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout // 2, operations)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), _conv3x3(cout // 2, cout // 4, operations)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), _conv3x3(cout // 4, cout // 4, operations)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True),
                                            operations.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([o1, o2, o3], 1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass; level ``n`` has ``b1_n`` (skip), ``b2_n`` (down), ``b3_n`` (up) blocks."""

    def __init__(self, depth: int, features: int, operations=nn):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features, operations))
            self.add_module(f"b2_{level}", ConvBlock(features, features, operations))
            if level == 1:
                self.add_module("b2_plus_1", ConvBlock(features, features, operations))
            self.add_module(f"b3_{level}", ConvBlock(features, features, operations))

    def _level(self, level, x):
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, size=up.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        return self._level(self.depth, x)


class FanBackbone(nn.Module):
    """One FAN hourglass stack reduced to a 512-d face descriptor."""

    def __init__(self, operations=nn):
        super().__init__()
        ops = operations
        self.conv1 = ops.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128, ops)
        self.conv3 = ConvBlock(128, 128, ops)
        self.conv4 = ConvBlock(128, 256, ops)
        self.m0 = HourGlass(4, 256, ops)
        self.top_m_0 = ConvBlock(256, 256, ops)
        self.conv_last0 = ops.Conv2d(256, 256, 1)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = ops.Conv2d(256, 68, 1)
        self.bn5 = nn.BatchNorm2d(68)
        self.conv6 = ops.Conv2d(68, 1, 3, 2, 1)
        self.fc = ops.Linear(28 * 28, 512)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = self.l0(F.relu(self.bn_end0(self.conv_last0(x))))
        x = self.conv6(F.relu(self.bn5(x)))
        return self.fc(F.relu(x.flatten(1)))


def _head(ops):
    return nn.Sequential(ops.Linear(512, 512), nn.ReLU(), nn.BatchNorm1d(512), ops.Linear(512, 512))


class MotionEncoder(nn.Module):
    """PD-FGC ``FanEncoder``: aligned faces -> [headpose 6, eye 6, emo 30, mouth 512] = 554."""

    def __init__(self, pose_dim: int = 6, eye_dim: int = 6, emo_dim: int = 30, operations=nn):
        super().__init__()
        ops = operations
        self.model = FanBackbone(ops)
        self.to_mouth = _head(ops)
        self.mouth_embed = nn.Sequential(nn.ReLU(), ops.Linear(512, 512 - pose_dim - eye_dim))
        self.to_headpose = _head(ops)
        self.headpose_embed = nn.Sequential(nn.ReLU(), ops.Linear(512, pose_dim))
        self.to_eye = _head(ops)
        self.eye_embed = nn.Sequential(nn.ReLU(), ops.Linear(512, eye_dim))
        self.to_emo = _head(ops)
        self.emo_embed = nn.Sequential(nn.ReLU(), ops.Linear(512, emo_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model(x)
        headpose = self.headpose_embed(self.to_headpose(x))
        eye = self.eye_embed(self.to_eye(x))
        emo = self.emo_embed(self.to_emo(x))
        return torch.cat([headpose, eye, emo, self.to_mouth(x)], dim=1)


def crops_to_tensor(crops: np.ndarray) -> torch.Tensor:
    """``[N, 224, 224, 3]`` uint8 RGB -> ``[N, 3, 224, 224]`` float in [-1, 1] (x/255*2-1)."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1


def motion_encoder_from_state_dict(state: dict, name: str = "pd_fpg.pth", dtype=torch.float32,
                                   operations=nn) -> MotionEncoder:
    """Strictly load a PD-FGC state dict (unprefixed, or with the single file's ``pd_fpg.``)."""
    state = sub_state(state, MOTION_ENCODER_PREFIX) or state
    with torch.device("meta"):
        encoder = MotionEncoder(operations=operations)
    if not any(k in state for k in encoder.state_dict()):
        raise CheckpointError(
            f"{name} is not the PD-FGC motion encoder (pd_fpg.pth); its first keys are: {', '.join(sorted(state)[:5])}.")
    load_strict(encoder, state, "", name, dtype, "PD-FGC motion encoder (pd_fpg.pth)")
    return encoder.eval()


def load_motion_encoder(path: str, dtype=torch.float32, operations=nn) -> MotionEncoder:
    return motion_encoder_from_state_dict(read_state_dict(path), os.path.basename(path), dtype, operations)
