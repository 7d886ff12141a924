"""FantasyPortrait Motion Control: per-component edits of the motion features (head pose, eyes,
emotion, mouth) between the Expression Extractor and Encode. Logic in ``fantasyportrait_core.motion.control``."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..fantasyportrait_core.errors import FantasyPortraitError
from ..fantasyportrait_core.motion.control import (COMPONENTS, MODES, ComponentControl, MotionControl,
                                                   apply_motion_control, draw_motion_preview)
from .common import FeaturesIO, log, node_schema, output, to_image

MODE_TIP = ("follow: as driven; freeze: hold the reference frame's value; scale: reference + amount x (driven - "
            "reference), below 1 calms, above 1 exaggerates.")


def _component_inputs(name: str, label: str) -> list:
    return [
        io.Combo.Input(f"{name}_mode", options=list(MODES), default="follow",
                       tooltip=f"{label.capitalize()}: {MODE_TIP}"),
        io.Float.Input(f"{name}_amount", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=f"{label.capitalize()} "
                       "scale amount (used by mode 'scale'; 1 = as driven, 0 = frozen)."),
        io.Float.Input(f"{name}_smooth", default=0.0, min=0.0, max=20.0, step=0.5, tooltip=f"Temporal smoothing of "
                       f"the {label} (Gaussian sigma in frames, centred so the timing does not shift); 0 = off. "
                       "Removes jitter."),
    ]


class FantasyPortraitMotionControl(io.ComfyNode):
    """Per-component motion control on the expression features, before they become tokens (so they stay in the
    trained distribution): follow, freeze, scale and smooth head pose, eyes, emotion and mouth, e.g. a talking
    portrait with a still head (head pose: freeze). The preview plots each component's motion over time before
    (grey) and after (colour) the edit."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Motion Control", "motion", inputs=[
            FeaturesIO.Input("features", tooltip="From FantasyPortrait Expression Extractor (or another Motion "
                             "Control node)."),
            io.Int.Input("person", default=-1, min=-1, max=15, tooltip="Which tracked person to edit (numbered "
                         "from 0, left to right); -1 = every person. Chain nodes for different edits per "
                         "person."),
            *[i for name, label in COMPONENTS.items() for i in _component_inputs(name, label)],
            io.Int.Input("reference_frame", default=0, min=0, max=100000, tooltip="Frame whose value freeze holds "
                         "and scale measures from (0 = the first frame)."),
        ], outputs=[output(FeaturesIO, "features", "The edited features, for FantasyPortrait Encode."),
                    output(io.Image, "preview", "Each component's motion over time, before (grey) and after "
                                                "(colour) the edit, for the edited person (person 0 when all).")])

    @classmethod
    def execute(cls, features, person, reference_frame, **widgets) -> io.NodeOutput:
        control = MotionControl(**{name: ComponentControl(widgets[f"{name}_mode"], widgets[f"{name}_amount"],
                                                          widgets[f"{name}_smooth"]) for name in COMPONENTS},
                                reference_frame=reference_frame)
        feats = features.features
        if person >= feats.shape[0]:
            raise FantasyPortraitError(f"Person {person} was asked for but the driving clip has {feats.shape[0]} "
                                       "person(s) (numbered from 0, left to right; -1 = every person).")
        edited = apply_motion_control(feats, control, None if person < 0 else [person])
        if not control.is_identity:
            log.info("FantasyPortrait motion control (%s): %s", "every person" if person < 0 else f"person {person}",
                     control.describe())
        shown = max(person, 0)
        preview = draw_motion_preview(feats[shown], edited[shown], reference_frame)
        return io.NodeOutput(dataclasses.replace(features, features=edited),
                             to_image(preview[None]))


NODES = [FantasyPortraitMotionControl]
