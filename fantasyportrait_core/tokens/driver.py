"""One driver's motion as FantasyPortrait Encode turns it into tokens: the person who drives, retimed to a frame
rate, fitted to the output length (4k+1), with that person's face boxes fitted the same way (Multi-Portrait
Combine builds the regions from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FantasyPortraitError
from ..faces.tracking import FaceTracks, largest_person
from ..video import resample_indices
from .windows import fit_frame_count


@dataclass
class DriverMotion:
    features: torch.Tensor  # [1, F, 554], F = 4k+1
    boxes: np.ndarray | None  # [F, 4] the driver's face box per frame (None for features without tracks)
    fps: float | None  # of the motion after any retiming (None when unknown)
    person: int  # the tracked person who drives
    notes: list[str] = field(default_factory=list)  # what was changed or is worth a look, for the log


def driver_motion(features: torch.Tensor, tracks: FaceTracks | None, fps: float | None, person: int = -1,
                  retime_to: float | None = None, num_frames: int | None = None,
                  frame_fit: str = "trim") -> DriverMotion:
    """Person ``person`` of ``[P, F, 554]`` features (-1: the largest face, the released rule; needs tracks
    unless there is one person), retimed from ``fps`` to ``retime_to`` (nearest frame; 0/None: not retimed) and
    fitted to ``num_frames`` (0/None: to 4k+1) by ``frame_fit`` (trim / pad)."""
    notes = []
    if person < 0 and tracks is None:  # features made without the tracker: only one person can be meant
        if features.shape[0] > 1:
            raise FantasyPortraitError("These features carry no face tracks, so the largest face is unknown: set "
                                       "person to a number.")
        person = 0
    elif person < 0:
        person, notes = largest_person(tracks)
    if person >= features.shape[0]:
        raise FantasyPortraitError(f"Person {person} was asked for but the driving clip has {features.shape[0]} "
                                   f"person(s) (numbered from 0, left to right).")
    feats = features[person:person + 1]
    boxes = tracks.boxes[person] if tracks is not None else None
    if retime_to and fps and abs(retime_to - fps) > 1e-3:
        idx = resample_indices(feats.shape[1], fps, retime_to)
        feats = feats[:, torch.from_numpy(idx)]
        boxes = boxes[idx] if boxes is not None else None
        notes.append(f"resampled the driving motion from {fps:g} to {retime_to:g} fps ({len(idx)} frames)")
        fps = retime_to
    target = num_frames or None
    feats, note = fit_frame_count(feats, frame_fit, target=target)
    notes += [note] if note else []
    if boxes is not None:
        boxes = fit_frame_count(torch.from_numpy(np.ascontiguousarray(boxes)), frame_fit, target=target)[0].numpy()
    return DriverMotion(feats, boxes, fps, person, notes)
