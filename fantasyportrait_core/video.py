"""Reading driving clips (PyAV) and writing preview videos.

A driving clip is read through :class:`DrivingFrames`: the frames that are used (a start offset and a
length, after retiming to a target fps) are given one at a time, each time the frames are iterated;
decoding stops after the last used frame, and only the used frames are converted. Nothing holds the
whole clip, so memory does not grow with the clip's length; the frames
stay at the source resolution (or a crop of it) because the released face models work on the full frame.

An edited clip (newer ComfyUI's Trim Video / Crop Video / Load Video's edit input, which keep the raw
file and a trim window and crop beside it) is read on its ``window`` (seconds, with the host's rule: the
frames whose timestamps lie in ``[start, start + duration)``, duration 0 = to the end) and its ``crop``
(a pixel rectangle, clamped and even-aligned as the host does), so the frames equal the host's decode of
that VIDEO without decoding the rest of the file.
"""

from __future__ import annotations

import copy
import functools
import io
import os
from collections.abc import Sequence

import numpy as np

from .errors import FantasyPortraitError, require

RELEASED_LENGTH = 81  # frames the released pipeline uses at most (4k+1)
RELEASED_MULTI_FPS = 25.0  # the released multi-person code re-encodes every driving clip to 25 fps


def shortest(counts: list[int], what: str) -> tuple[int, str | None]:
    """The frame count several clips are cut to (the shortest one's), and a note when they differ."""
    frames = min(counts)
    if len(set(counts)) == 1:
        return frames, None
    return frames, f"{what} have {', '.join(map(str, counts))} frames; all were trimmed to the shortest, {frames}"


def resample_indices(num_frames: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Source frame for every output frame when retiming ``src_fps`` to ``dst_fps`` (nearest frame,
    like ffmpeg's fps filter)."""
    if num_frames < 1:
        return np.zeros(0, dtype=np.int64)
    duration = num_frames / src_fps
    count = max(1, int(np.floor(duration * dst_fps + 1e-6)))
    idx = np.floor(np.arange(count) * src_fps / dst_fps + 0.5).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def _ffmpeg_message(exc) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _open(source, name: str):
    """Open a video with PyAV, naming what is wrong with a file that is not one."""
    av = require("av", "Reading driving videos", "av")
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FantasyPortraitError(f"Driving video not found: {source}")
        size = os.path.getsize(source)
    else:
        source.seek(0)
        size = len(source.getbuffer()) if isinstance(source, io.BytesIO) else -1
    if size == 0:
        raise FantasyPortraitError(f"{name} is empty (0 bytes): it was not written or copied completely. Copy or "
                                   "download it again.")
    try:
        return av.open(source)
    except av.error.FFmpegError as exc:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                head = fh.read(16)
        else:
            source.seek(0)
            head = source.read(16)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
            raise FantasyPortraitError(
                f"{name} is an MP4/MOV video that cannot be opened: it is incomplete (an interrupted download, "
                "copy or recording leaves out the index FFmpeg needs). Copy or download it again, or re-export it."
            ) from exc
        raise FantasyPortraitError(
            f"{name} is not a video file FFmpeg can read ({size} bytes, starting with {head[:8]!r}; FFmpeg: "
            f"{_ffmpeg_message(exc)}). Use a video such as MP4, MOV, WebM or AVI.") from exc


def _video_stream(container, name: str):
    if not container.streams.video:
        raise FantasyPortraitError(f"{name} has no video stream (an audio file?): use a video of the driving face.")
    return container.streams.video[0]


class DrivingFrames(Sequence):
    """The used frames of a driving clip as a lazy sequence of RGB uint8 ``[H, W, 3]`` frames.

    ``start`` frames are skipped and ``length`` kept (0 = to the end), counted after retiming to
    ``fps`` (nearest frame; None keeps the clip's rate). Opening the clip counts its frames from the
    container's packets without decoding them; every iteration decodes the clip up to the last
    used frame and converts only the used ones, so at most one decoded frame is held at a time.
    """

    def __init__(self, source, start: int = 0, length: int = RELEASED_LENGTH, fps: float | None = None,
                 name: str | None = None, window: tuple[float, float] | None = None,
                 crop: tuple[int, int, int, int] | None = None):
        if isinstance(source, (str, os.PathLike)):
            name = name or os.path.basename(source)
        self.source, self.name = source, name or "the driving video"
        if start < 0:
            raise FantasyPortraitError(f"start_frame must be 0 or more; got {start}.")
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise FantasyPortraitError(f"fps must be a positive number (or 0 to keep the clip's rate); got {fps}.")
        with _open(source, self.name) as container:
            stream = _video_stream(container, self.name)
            self.source_fps = float(stream.average_rate or stream.guessed_rate or 25.0)
            pts, self._time_base = self._frame_pts(container, stream)
            size = (stream.width, stream.height)
        self.source_frames = len(pts)
        if self.source_frames == 0:
            raise FantasyPortraitError(f"{self.name} contains no video frames: it is empty or incomplete.")
        self._pts = pts  # presentation timestamp of every frame (None when the file has none)
        first, count = self._trim(window)
        self.crop = crop_rect(crop, *size) if crop is not None else None
        self.size = self.crop[2:] if self.crop is not None else size  # (width, height) of the frames given
        retime = fps is not None and abs(fps - self.source_fps) > 1e-3
        idx = first + (resample_indices(count, self.source_fps, fps) if retime else np.arange(count))
        self.fps = float(fps) if retime else self.source_fps
        if start >= len(idx):
            raise FantasyPortraitError(
                f"start_frame {start} is past the end of {self.name}, which has {len(idx)} frames at {self.fps:g} "
                f"fps{self._trim_note}: lower start_frame.")
        self.indices = idx[start:start + length] if length else idx[start:]

    @functools.cached_property
    def rotation(self) -> int:
        """The display rotation (degrees) of the clip's frames, from its first frame (0 when none or unknown;
        read when first asked). Frames are given as stored, unrotated."""
        with _open(self.source, self.name) as container:
            try:
                frame = next(container.decode(_video_stream(container, self.name)), None)
            except Exception:  # noqa: BLE001 - a clip that does not decode is reported when its frames are read
                return 0
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360 if frame is not None else 0

    @staticmethod
    def _frame_pts(container, stream):
        """Presentation timestamps of the frames and their time base, from the container's packets (nothing
        is decoded): decoded frames come out in presentation order, so frame i has the i-th smallest one."""
        pts = [packet.pts for packet in container.demux(stream) if packet.size]
        if any(p is None for p in pts) or stream.time_base is None:
            return [None] * len(pts), None
        return sorted(pts), stream.time_base

    def _trim(self, window) -> tuple[int, int]:
        """First frame and frame count of the trim window (the whole clip without one), by the host's rule:
        timestamps from ``int(start / time_base)`` on, before ``int((start + duration) / time_base)``."""
        self._trim_note, self._window = "", None
        if window is None or (not window[0] and not window[1]):
            return 0, len(self._pts)
        begin, seconds = float(window[0]), float(window[1])
        self._trim_note = f" in its trim window ({begin:g} s" + (f" for {seconds:g} s)" if seconds else " on)")
        if self._time_base is None:
            raise FantasyPortraitError(f"{self.name} is trimmed, but its frames carry no timestamps: re-encode it "
                                       "(e.g. as MP4) or feed its frames as images.")
        lo = int(begin / self._time_base)
        hi = int((begin + seconds) / self._time_base) if seconds else None
        inside = [i for i, p in enumerate(self._pts) if p >= lo and (hi is None or p < hi)]
        if not inside:
            raise FantasyPortraitError(f"{self.name} has no frame{self._trim_note}: widen the trim (Trim Video / "
                                       "Load Video's edit).")
        self._window = (begin, inside[0])  # its start (seconds) and first frame
        return inside[0], len(inside)

    @property
    def start_seconds(self) -> float:
        """Time of the first used frame in the source clip: ``index / fps``, counted from the trim window's start
        (where the host starts a trimmed VIDEO's audio) when there is one."""
        if self._window is None:
            return float(self.indices[0]) / self.source_fps
        start, first = self._window
        return start + float(self.indices[0] - first) / self.source_fps

    @property
    def duration(self) -> float:
        return len(self) / self.fps

    def __len__(self) -> int:
        return len(self.indices)

    def first(self, count: int) -> "DrivingFrames":
        """The same clip cut to its first ``count`` used frames (nothing is read again)."""
        cut = copy.copy(self)
        cut.indices = self.indices[:count]
        return cut

    def __iter__(self):
        return self._decode(self.indices)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return np.stack(list(self._decode(self.indices[item])))
        return next(self._decode(self.indices[[item]]))

    def _decode(self, wanted: np.ndarray):
        av = require("av", "Reading driving videos", "av")
        if len(wanted) == 0:
            return
        order = list(wanted)
        pos, produced = 0, 0
        with _open(self.source, self.name) as container:
            stream = _video_stream(container, self.name)
            stream.thread_type = "AUTO"
            try:
                for i, frame in enumerate(container.decode(stream)):
                    if i < order[pos]:
                        continue
                    rgb = frame.to_ndarray(format="rgb24")
                    if self.crop is not None:
                        x, y, w, h = self.crop
                        rgb = np.ascontiguousarray(rgb[y:y + h, x:x + w])
                    while pos < len(order) and order[pos] == i:
                        yield rgb
                        pos, produced = pos + 1, produced + 1
                    if pos == len(order):
                        return
            except av.error.FFmpegError as exc:
                raise FantasyPortraitError(
                    f"{self.name} could not be decoded after {produced} frames ({_ffmpeg_message(exc)}): it is "
                    "damaged or incomplete. Copy or download it again, or re-export it.") from exc
        if pos < len(order):
            raise FantasyPortraitError(
                f"{self.name} ends after {produced} of the {len(order)} frames its index lists: it is damaged or "
                "incomplete. Copy or download it again, or re-export it.")


def crop_rect(crop, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A crop ``(x, y, w, h)`` of a ``width`` x ``height`` frame as ComfyUI's Crop Video applies it: the
    corner clamped into the frame and made even, the size clamped to the frame and made even; None when
    the rectangle is empty or the whole frame."""
    x, y, w, h = (int(v) for v in crop)
    if w <= 0 or h <= 0:
        return None
    x, y = max(0, min(x, width - 1)), max(0, min(y, height - 1))
    x, y = x - x % 2, y - y % 2
    w, h = min(w, width - x), min(h, height - y)
    if (x, y, w, h) == (0, 0, width, height):
        return None
    w, h = w - w % 2, h - h % 2
    return (x, y, w, h) if w > 0 and h > 0 else None


def read_audio(source, start: float, duration: float | None = None, name: str = "the driving video"):
    """The audio of ``[start, start + duration)`` seconds as a ComfyUI AUDIO dict (``waveform``
    ``[1, channels, samples]`` float32, ``sample_rate``), or None when the clip has no audio."""
    av = require("av", "Reading driving videos", "av")
    import torch

    with _open(source, name) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        first, last = int(round(start * rate)), None if duration is None else int(round((start + duration) * rate))
        chunks, at = [], None
        try:
            for frame in container.decode(stream):
                data = frame.to_ndarray()
                if data.dtype.kind in "iu":
                    data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
                if frame.format.is_planar:
                    data = data.reshape(len(frame.layout.channels), -1)
                else:
                    data = data.reshape(-1, len(frame.layout.channels)).T
                if at is None:
                    at = int(round(float(frame.pts * stream.time_base) * rate)) if frame.pts is not None else 0
                begin, end = at, at + data.shape[1]
                at = end
                if end <= first:
                    continue
                chunks.append(data[:, max(0, first - begin):(None if last is None else max(0, last - begin))])
                if last is not None and end >= last:
                    break
        except av.error.FFmpegError:
            pass  # a damaged audio tail: keep what decoded
    if not chunks:
        return None
    wave = np.concatenate(chunks, 1).astype(np.float32)
    return {"waveform": torch.from_numpy(np.ascontiguousarray(wave))[None], "sample_rate": rate}


def write_video(path: str, frames, fps: float, container_format: str | None = None, crf: int | None = None) -> None:
    """Write ``[F, H, W, 3]`` uint8 RGB frames (an array or any sequence of frames) as an H.264 (or
    MPEG-4) video; ``container_format`` (e.g. ``"mp4"``) when the file name does not say it, ``crf`` the H.264
    quality (lower is better; libx264's default is 23)."""
    av = require("av", "Writing videos", "av")
    from fractions import Fraction

    stream = None
    with av.open(path, mode="w", format=container_format) as container:
        for frame in frames:
            frame = np.asarray(frame)
            if stream is None:
                h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
                codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                if crf is not None and codec == "libx264":
                    stream.options = {"crf": str(crf)}
            packet = stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24"))
            container.mux(packet)
        if stream is not None:
            container.mux(stream.encode())
