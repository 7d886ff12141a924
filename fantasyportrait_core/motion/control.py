"""Per-component motion control: edit the motion **features** before they become tokens.

The 554 features of a frame are four components (their slices come from :data:`FEATURE_SLICES`):
head pose (6), eyes (6), emotion (30) and mouth (512). Each component, per person, can be

* ``follow``: as driven (the default; the features are returned untouched, bit for bit);
* ``freeze``: held at the reference frame's value for the whole clip;
* ``scale``: ``reference + amount * (value - reference)``: ``amount < 1`` calms the motion, ``> 1``
  exaggerates it, 0 equals freeze, 1 is the identity;

and, independently, smoothed over time (``smooth``: the sigma of a centred Gaussian, in frames; 0 =
off). The Gaussian is symmetric, so smoothing does not shift the timing of the motion. Smoothing is
applied first, then the mode. Because the edits act on features the tokens stay in the distribution
the adapter was trained on, unlike scaling the tokens (:class:`~..tokens.adapter.GroupScales`, the low-level
control).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..errors import FantasyPortraitError
from .features import FEATURE_SLICES, split_features

MODES = ("follow", "freeze", "scale")
#: component -> label shown to users, in feature order
COMPONENTS = {"headpose": "head pose", "eye": "eyes", "emo": "emotion", "mouth": "mouth"}


@dataclass(frozen=True)
class ComponentControl:
    mode: str = "follow"
    amount: float = 1.0
    smooth: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise FantasyPortraitError(f"Motion mode {self.mode!r} is not one of {', '.join(MODES)}.")
        if not (math.isfinite(self.amount) and math.isfinite(self.smooth)) or self.smooth < 0:
            raise FantasyPortraitError(
                f"Motion control amount {self.amount} / smooth {self.smooth}: give finite numbers, smooth >= 0.")

    @property
    def is_identity(self) -> bool:
        return self.smooth == 0 and (self.mode == "follow" or (self.mode == "scale" and self.amount == 1))


@dataclass(frozen=True)
class MotionControl:
    headpose: ComponentControl = field(default_factory=ComponentControl)
    eye: ComponentControl = field(default_factory=ComponentControl)
    emo: ComponentControl = field(default_factory=ComponentControl)
    mouth: ComponentControl = field(default_factory=ComponentControl)
    reference_frame: int = 0

    @property
    def is_identity(self) -> bool:
        return all(getattr(self, name).is_identity for name in COMPONENTS)

    def describe(self) -> str:
        parts = [f"{COMPONENTS[f.name]} {c.mode}" + (f" {c.amount:g}" if c.mode == "scale" else "")
                 + (f", smooth {c.smooth:g}" if c.smooth else "")
                 for f in fields(self) if f.name in COMPONENTS for c in [getattr(self, f.name)] if not c.is_identity]
        return "; ".join(parts) or "follow (unchanged)"


def gaussian_smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Centred Gaussian smoothing along dim -2 (frames) of ``[..., F, D]``, edges reflected."""
    if sigma <= 0 or values.shape[-2] < 2:
        return values
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(values.dtype)
    frames = values.shape[-2]
    index = torch.arange(frames).unsqueeze(1) + offsets.long().unsqueeze(0)  # [F, K]
    index = index.abs()  # reflect at the start
    index = torch.where(index >= frames, 2 * (frames - 1) - index, index).clamp(0, frames - 1)  # and at the end
    return torch.einsum("...fkd,k->...fd", values[..., index, :], kernel)


def apply_motion_control(features: torch.Tensor, control: MotionControl, persons=None) -> torch.Tensor:
    """Edit ``[P, F, 554]`` (or ``[F, 554]``) features; ``persons`` limits the edit to those rows
    (all when None). With every component on follow the input is returned as it is."""
    if control.is_identity:
        return features
    split_features(features)  # refuses a width other than the PD-FGC layout's, with the layout in the message
    frames = features.shape[-2]
    ref = control.reference_frame
    if not 0 <= ref < frames:
        raise FantasyPortraitError(f"Reference frame {ref} is outside the clip (frames 0-{frames - 1}).")
    single = features.ndim == 2
    out = features.unsqueeze(0).clone() if single else features.clone()
    rows = list(range(out.shape[0])) if persons is None else list(persons)
    bad = [p for p in rows if not 0 <= p < out.shape[0]]
    if bad:
        raise FantasyPortraitError(f"Person {bad[0]} is not in the features ({out.shape[0]} person(s), from 0).")
    for name, (start, stop) in FEATURE_SLICES.items():
        c: ComponentControl = getattr(control, name)
        if c.is_identity:
            continue
        part = gaussian_smooth(out[rows, :, start:stop], c.smooth)
        reference = part[:, ref:ref + 1]
        if c.mode == "freeze":
            part = reference.expand_as(part)
        elif c.mode == "scale" and c.amount != 1:
            part = reference + c.amount * (part - reference)
        out[rows, :, start:stop] = part
    return out[0] if single else out


def parse_component(text: str) -> ComponentControl:
    """Command-line form: ``follow``, ``freeze``, ``scale:0.5``, with an optional ``,smooth:2``
    (e.g. ``scale:1.3,smooth:1.5`` or just ``smooth:2``)."""
    mode, amount, smooth = "follow", 1.0, 0.0
    for item in filter(None, (p.strip() for p in text.lower().split(","))):
        key, _, value = item.partition(":")
        try:
            if key in ("follow", "freeze"):
                mode = key
            elif key == "scale":
                mode, amount = "scale", float(value)
            elif key == "smooth":
                smooth = float(value)
            else:
                raise ValueError
        except ValueError:
            raise FantasyPortraitError(
                f"Motion control {text!r}: use follow, freeze or scale:AMOUNT, optionally with ,smooth:SIGMA "
                "(e.g. scale:0.5,smooth:2).") from None
    return ComponentControl(mode, amount, smooth)


def motion_curves(features: torch.Tensor, reference_frame: int = 0) -> dict[str, np.ndarray]:
    """Per component, how far each frame is from the reference frame (L2 norm): ``[F]`` arrays."""
    feats = features.detach().float().cpu()
    return {name: (feats[:, start:stop] - feats[reference_frame, start:stop]).norm(dim=-1).numpy()
            for name, (start, stop) in FEATURE_SLICES.items()}


def draw_motion_preview(before: torch.Tensor, after: torch.Tensor, reference_frame: int = 0,
                        width: int = 640, panel: int = 110) -> np.ndarray:
    """A readable plot (uint8 RGB): one panel per component, the motion over time (distance from the
    reference frame) before the edit in grey and after it in colour. ``before``/``after``: ``[F, 554]``."""
    import cv2

    colours = {"headpose": (66, 135, 245), "eye": (46, 184, 92), "emo": (230, 120, 40), "mouth": (200, 60, 160)}
    a, b = motion_curves(before, reference_frame), motion_curves(after, reference_frame)
    image = np.full((panel * len(COMPONENTS), width, 3), 255, np.uint8)
    margin, frames = 12, len(next(iter(a.values())))
    for row, (name, label) in enumerate(COMPONENTS.items()):
        top = row * panel
        top_y, bottom_y = top + 26, top + panel - 10
        peak = max(float(a[name].max()), float(b[name].max()), 1e-6)
        cv2.rectangle(image, (margin, top_y), (width - margin, bottom_y), (225, 225, 225), 1)
        for curve, colour, thick in ((a[name], (150, 150, 150), 1), (b[name], colours[name], 2)):
            xs = margin + np.arange(frames) * (width - 2 * margin) / max(frames - 1, 1)
            ys = bottom_y - curve / peak * (bottom_y - top_y)
            pts = np.stack([xs, ys], 1).round().astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], False, colour, thick, cv2.LINE_AA)
        cv2.putText(image, f"{label}: grey = driven, colour = after edit (distance from frame {reference_frame})",
                    (margin, top + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return image
