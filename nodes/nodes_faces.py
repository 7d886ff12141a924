"""FantasyPortrait face nodes: tracking the driving clip's faces and extracting their expression features."""

from __future__ import annotations

from comfy_api.latest import InputImpl, io

from ..fantasyportrait_core.errors import FantasyPortraitError, require_finite
from ..fantasyportrait_core.faces.tracking import keep_persons, track_faces
from ..fantasyportrait_core.motion.extraction import (ExpressionFeatures, TrackedFaces, check_driving_frames,
                                                      crops_and_preview, encode_crops, frames_to_uint8,
                                                      preview_indices)
from ..fantasyportrait_core.tokens.windows import check_clip_length
from .common import (DEFAULT_FPS, PREVIEW_SIDE, FaceModelsIO, FeaturesIO, Progress, TracksIO, check_length_widget,
                     log, node_schema, output, to_image)


LENGTH_MAX = 100_001  # frames of a driving window (4k+1): over an hour at 25 fps
PREVIEW_FRAMES = 121  # the IMAGE previews of a longer clip show this many frames, spread over it


def _video_source(video):
    """A VIDEO read from a file (Load Video, Trim Video, Crop Video) -> what DrivingFrames streams: the file
    (a path or a BytesIO, as PyAV opens it), its trim window and its crop; None for any other VIDEO (e.g.
    Create Video's, made from frames), whose frames the host decodes itself (``get_components``).

    Newer releases keep edits beside the raw file (Comfy-Org/ComfyUI 0c6cfff6,
    ``comfy_api/latest/_input_impl/video_types.py``: ``VideoFromFile(file, start_time=, duration=, crop=)``,
    ``get_active_trim_window()``, ``as_trimmed``/``as_cropped``), while ``get_stream_source()`` still returns
    the whole file. The trim window has a public getter; the crop has none, so it is read from the
    instance and checked against the VIDEO's own ``get_dimensions()``: a VIDEO whose size differs from
    what would be streamed is decoded by the host instead (correct, but all its frames in memory)."""
    if not isinstance(video, InputImpl.VideoFromFile):
        return None
    window = video.get_active_trim_window() if hasattr(video, "get_active_trim_window") else None
    crop = getattr(video, "_VideoFromFile__crop", None)
    return video.get_stream_source(), window, crop


def _streamed(video, frames) -> bool:
    """Whether ``frames`` (DrivingFrames of ``video``'s file) are the frames the host would give. A rotated clip
    (phone videos) on a host that keeps edits beside the file is not: such hosts rotate the frames before
    cropping them (0c6cfff6 ``_rotation_quadrant``), the stream gives them as stored."""
    size = tuple(video.get_dimensions())
    if frames.rotation and hasattr(video, "get_active_trim_window"):
        why = f"it is rotated by {frames.rotation} degrees"
    elif size != tuple(frames.size):
        why = (f"this VIDEO is {size[0]}x{size[1]} but its file streams as {frames.size[0]}x{frames.size[1]} (an edit "
               "this ComfyUI keeps in a way the pack does not know)")
    else:
        return True
    log.warning("FantasyPortrait: %s, so its frames are decoded by ComfyUI instead, all in memory.", why)
    return False


def streamed_frames(video, start: int = 0, length: int = 0, fps: float | None = None,
                    name: str = "the driving video"):
    """The used frames of a VIDEO streamed from its file, one at a time (DrivingFrames), or None when ComfyUI must
    decode it: a VIDEO made from frames, or an edit the pack cannot stream (see ``_video_source``, ``_streamed``)."""
    from ..fantasyportrait_core.video import DrivingFrames

    stream = _video_source(video)
    if stream is None:
        return None
    source, window, crop = stream
    frames = DrivingFrames(source, start, length, fps, name=name, window=window, crop=crop)
    return frames if _streamed(video, frames) else None


def _audio_window(audio, start_seconds: float, seconds: float | None):
    """The part of an AUDIO from ``start_seconds`` on (``seconds`` long, or to the end)."""
    if audio is None:
        return None
    rate = audio["sample_rate"]
    first = int(round(start_seconds * rate))
    last = None if seconds is None else first + int(round(seconds * rate))
    return {**audio, "waveform": audio["waveform"][..., first:last]}


class FantasyPortraitFaceTracker(io.ComfyNode):
    """Detects and tracks every face through the used frames of the driving clip with stable ids, fills frames
    where a person was missed (reported in the log), and shows boxes, ids and landmarks."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Face Tracker", "faces", inputs=[
            FaceModelsIO.Input("face_models", tooltip="From FantasyPortrait Face Model Loader."),
            io.Int.Input("min_face", default=96, min=16, max=1024, tooltip="Smallest face kept (landmark box "
                         "side, pixels). The released value is 96; lower it for small faces."),
            io.Int.Input("persons", default=0, min=0, max=16, tooltip="Keep the N persons found in most frames "
                         "(0 = everyone). Persons are numbered left to right."),
            io.Video.Input("video", optional=True, tooltip="Driving video straight from Load Video: only the "
                           "frames used are decoded, one at a time, so a long clip costs no more memory than a "
                           "short one. Use this or images."),
            io.Image.Input("images", optional=True, tooltip="Driving frames as images (e.g. from Get Video "
                           "Components), instead of video. They are already all in memory; the frame window "
                           "below still applies."),
            io.Int.Input("start_frame", default=0, min=0, max=1_000_000, optional=True, tooltip="Skip this many "
                         "frames of the clip (counted at the fps below)."),
            io.Int.Input("length", default=81, min=0, max=LENGTH_MAX, optional=True, tooltip="Frames to use from "
                         "start_frame: 4k+1 (81 as released, about 3 s at 25 fps), or 0 for the whole clip."),
            io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=0.01, optional=True, tooltip="Retime the "
                           "video to this frame rate (nearest frame) before taking the frames; the released "
                           "multi-person code uses 25. 0 keeps the clip's rate. Needs the video input."),
        ], outputs=[
            output(TracksIO, "tracks", "Face tracks and aligned faces, for the Expression Extractor."),
            output(io.Image, "aligned_faces", "The 224x224 faces the motion encoder sees, person by person (of a "
                                              f"clip longer than {PREVIEW_FRAMES} frames, {PREVIEW_FRAMES} frames spread "
                                              "over it)."),
            output(io.Image, "preview", "The used frames (long side 512) with boxes, ids and landmarks (of a clip "
                                        f"longer than {PREVIEW_FRAMES} frames, {PREVIEW_FRAMES} frames spread over it)."),
            output(io.Float, "fps", "Frame rate of the used frames (from the video, after any retiming; 25 for "
                                    "images)."),
            output(io.Audio, "audio", "The driving video's audio from the first used frame on (none for images): "
                                      "connect it to Create Video."),
        ])

    @classmethod
    def validate_inputs(cls, length=81):
        return check_length_widget(length, "length", LENGTH_MAX)

    @classmethod
    def execute(cls, face_models, min_face, persons, video=None, images=None, start_frame=0, length=81,
                fps=0.0) -> io.NodeOutput:
        import torch

        from ..fantasyportrait_core.video import read_audio, resample_indices

        require_finite(fps=fps)
        check_clip_length(length, "length")
        audio, rate = None, DEFAULT_FPS
        if video is not None:
            frames = streamed_frames(video, start_frame, length, fps or None)
            if frames is None:  # a VIDEO made from frames (they are all in memory already), or one ComfyUI decodes
                components = video.get_components()
                images, rate = components.images, float(components.frame_rate)
                if fps and abs(fps - rate) > 1e-3:  # retimed as a file is (nearest frame)
                    images = images[torch.from_numpy(resample_indices(len(images), rate, fps))]
                    rate = float(fps)
                audio = _audio_window(components.audio, start_frame / rate, length / rate if length else None)
            else:
                rate = frames.fps
                audio = read_audio(frames.source, frames.start_seconds, frames.duration, "the driving video")
        elif images is None:
            raise FantasyPortraitError("Connect the driving clip to the Face Tracker: video (from Load Video) or "
                                       "images.")
        if images is not None:
            if fps and video is None:
                log.warning("FantasyPortrait: fps only retimes a VIDEO; these images are used at their own rate")
            if start_frame >= len(images):
                raise FantasyPortraitError(f"start_frame {start_frame} is past the end of the driving images "
                                           f"({len(images)} frames): lower start_frame.")
            frames = frames_to_uint8(images[start_frame:start_frame + length] if length else images[start_frame:])
        check_driving_frames(len(frames), "The driving video")
        n = len(frames)
        bar = Progress(3 * n)  # two tracking passes, then the aligned faces and the preview
        tracks = track_faces(frames, face_models.detector, face_models.landmarker, min_face=min_face,
                             progress=lambda d, t: bar(d, 3 * n), source="the driving frames")
        tracks = keep_persons(tracks, persons)
        for note in tracks.notes:
            log.warning("FantasyPortrait: %s", note)
        # the aligned faces are all the next node needs: keep them (224x224 per face), not the full frames
        crops, preview = crops_and_preview(frames, tracks, max_side=PREVIEW_SIDE,  # one pass over the clip
                                           progress=lambda d, t: bar(2 * n + d, 3 * n), preview_frames=PREVIEW_FRAMES)
        shown = preview_indices(n, PREVIEW_FRAMES)
        if len(shown) < n:
            log.info("FantasyPortrait: the tracker's previews show %d of the %d frames, spread over the clip",
                     len(shown), n)
        return io.NodeOutput(TrackedFaces(tracks, crops, rate), to_image(crops[:, shown].reshape(-1, 224, 224, 3)),
                             to_image(preview), rate, audio)


class FantasyPortraitExpressionExtractor(io.ComfyNode):
    """Runs the PD-FGC motion encoder on every aligned face, as the released extraction does: per person and
    frame, 554 numbers (head pose, eyes, emotion, mouth)."""

    @classmethod
    def define_schema(cls):
        return node_schema(cls, "Expression Extractor", "faces", inputs=[
            FaceModelsIO.Input("face_models", tooltip="From FantasyPortrait Face Model Loader."),
            TracksIO.Input("tracks", tooltip="From FantasyPortrait Face Tracker."),
            io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=0.01, optional=True, tooltip="Frame rate "
                           "of the driving frames, kept with the features so the output video can use it. 0 = the "
                           "tracker's (the video's rate; 25 for images)."),
        ], outputs=[output(FeaturesIO, "features", "554 numbers per person and frame, with the tracks and fps: for "
                                                   "Encode, or Motion Control first.")])

    @classmethod
    def execute(cls, face_models, tracks, fps=0.0) -> io.NodeOutput:
        from .managed import load_managed, managed_module

        require_finite(fps=fps)
        t, crops = tracks.tracks, tracks.crops.reshape(-1, 224, 224, 3)
        encoder, device = load_managed(managed_module(face_models, "motion_encoder", lambda: face_models.motion_encoder,
                                                      face_models.device))
        feats = encode_crops(encoder, crops, device=device, progress=Progress(len(crops)))
        rate = fps or tracks.fps or DEFAULT_FPS
        return io.NodeOutput(ExpressionFeatures(feats.reshape(t.num_persons, t.num_frames, -1), t, rate))


NODES = [FantasyPortraitFaceTracker, FantasyPortraitExpressionExtractor]
