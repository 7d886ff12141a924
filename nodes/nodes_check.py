"""FantasyPortrait check node: does the output follow its driver(s)? The motion-fidelity report in a graph."""

from __future__ import annotations

import json

from comfy_api.latest import io

from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from .common import DEFAULT_FPS, FaceModelsIO, FeaturesIO, Progress, log, node_schema, output, to_image
from .nodes_faces import streamed_frames

DRIVERS = 4


def _output_frames(images, video, fps: float):
    """The output's frames (streamed from the file for a VIDEO read from one) and their frame rate (0: unknown)."""
    from ..fantasyportrait_core.motion.extraction import frames_to_uint8

    if video is not None:
        frames = streamed_frames(video, name="the output video")
        if frames is not None:
            return frames, frames.fps
        components = video.get_components()
        return frames_to_uint8(components.images), float(components.frame_rate)
    if images is None:
        raise FantasyPortraitError("Connect the output to FantasyPortrait Motion Check: images (from VAE Decode) or "
                                   "video (e.g. FantasyPortrait Long Video's).")
    return frames_to_uint8(images), fps


class FantasyPortraitMotionCheck(io.ComfyNode):
    """Measures how well the output's faces follow their drivers: per face the head pose, eye and expression
    errors (on motion relative to the first frame, so identity does not count), mouth-opening correlation, jitter
    and the best time offset, and the leakage matrix between faces and drivers. Read its report before delivering
    a render."""

    @classmethod
    def define_schema(cls):
        drivers = [FeaturesIO.Input(f"driver_{k}", optional=True, tooltip=f"Driver {k}'s features, when each "
                                    "person has a clip of their own (persons are taken in order).")
                   for k in range(2, DRIVERS + 1)]
        return node_schema(cls, "Motion Check", "check", inputs=[
            FaceModelsIO.Input("face_models", tooltip="From FantasyPortrait Face Model Loader (with the motion "
                               "encoder): the output's faces go through the same pipeline as the driver's."),
            FeaturesIO.Input("driver", tooltip="The driving clip's features, from the Expression Extractor that fed "
                             "Encode (a clip with several people gives one driver per person, left to right)."),
            io.Image.Input("images", optional=True, tooltip="The output frames (from VAE Decode)."),
            io.Video.Input("video", optional=True, tooltip="The output as a VIDEO instead (e.g. FantasyPortrait Long "
                           "Video's); read frame by frame from its file."),
            *drivers,
            io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=0.01, optional=True, tooltip="Frame rate of "
                           "the output images; 0 = the driver's (what the shipped graphs make). A VIDEO has its own."),
            io.String.Input("mapping", default="", optional=True, tooltip="Which driver person drives each output "
                            "face, left to right, e.g. '2,1' (as Multi-Portrait Combine's mapping); empty = in order."),
            io.Int.Input("max_offset", default=15, min=0, max=120, optional=True, tooltip="Largest time offset "
                         "(frames) searched for the best alignment (at most a third of the clip is used)."),
            io.Image.Input("portrait", optional=True, tooltip="The portrait, for identity similarity (needs the "
                           "ArcFace folder below)."),
            io.String.Input("insightface_dir", default="", optional=True, tooltip="Optional: a local folder with "
                            "insightface's ArcFace model (w600k_r50.onnx of buffalo_l) for identity similarity to the "
                            "portrait; without it identity is reported as absent."),
        ], outputs=[
            output(io.String, "report", "The report as text: per face its errors (with a still face's for scale), "
                                        "correlations, jitter and best offset; the leakage matrix."),
            output(io.Image, "plot", "Per face its mouth opening and head roll over time beside its driver's, and "
                                     "the leakage matrix."),
            output(io.String, "report_json", "Every number and curve as JSON (the same as 'fantasyportrait eval "
                                             "--json')."),
        ])

    @classmethod
    def execute(cls, face_models, driver, images=None, video=None, driver_2=None, driver_3=None, driver_4=None,
                fps=0.0, mapping="", max_offset=15, portrait=None, insightface_dir="") -> io.NodeOutput:
        import dataclasses
        import time

        from ..fantasyportrait_core.evaluation.clips import add_identity, at_fps
        from ..fantasyportrait_core.evaluation.plot import draw_message, draw_report
        from ..fantasyportrait_core.evaluation.report import evaluate, summary
        from ..fantasyportrait_core.motion.extraction import extract_features, frames_to_uint8
        from .managed import load_managed, managed_module

        require_finite(fps=fps)
        started = time.perf_counter()
        frames, rate = _output_frames(images, video, fps)
        drivers = [d for d in (driver, driver_2, driver_3, driver_4) if d is not None]
        rate = rate or drivers[0].fps or DEFAULT_FPS
        retimed = [k + 1 for k, d in enumerate(drivers) if d.fps and abs(d.fps - rate) > 1e-3]
        drivers = [at_fps(d, rate) for d in drivers]
        encoder, _ = load_managed(managed_module(face_models, "motion_encoder", lambda: face_models.motion_encoder,
                                                 face_models.device))
        models = dataclasses.replace(face_models, motion_encoder=encoder)
        try:
            out = extract_features(frames, models, source="the output frames", fps=rate,
                                   progress=Progress(3 * len(frames)))
            names = [f"driver {k + 1}" if len(drivers) > 1 else "the driver" for k in range(len(drivers))]
            report = evaluate(out, drivers, names, mapping, max_offset=min(max_offset, len(frames) // 3))
            image = None if portrait is None else frames_to_uint8(portrait[:1])[0]
            add_identity(report, frames, out, image, models, insightface_dir.strip() or None)
        except FantasyPortraitError as exc:
            # what the output holds (no face, other faces than drivers): said in the report, never failing the
            # prompt after the render it checks (wiring mistakes above still stop it)
            text = f"FantasyPortrait motion check: not measured. {exc}"
            log.warning("%s", text)
            return io.NodeOutput(text, to_image(draw_message(text))[None], json.dumps({"error": str(exc)}))
        report["notes"] += [f"driver {k} was retimed to the output's {rate:g} fps" for k in retimed]
        report["seconds"] = time.perf_counter() - started
        report["seconds_per_frame"] = report["seconds"] / max(report["frames"], 1)
        text = summary(report)
        log.info("%s", text)
        return io.NodeOutput(text, to_image(draw_report(report))[None], json.dumps(report))


NODES = [FantasyPortraitMotionCheck]
