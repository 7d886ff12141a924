"""Reading driving clips (PyAV) and writing preview videos."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import FantasyPortraitError, require


@dataclass
class Clip:
    frames: np.ndarray  # [F, H, W, 3] uint8 RGB
    fps: float
    source: str


def resample_indices(num_frames: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Source frame for every output frame when retiming ``src_fps`` to ``dst_fps`` (nearest frame,
    like ffmpeg's fps filter)."""
    if num_frames < 1:
        return np.zeros(0, dtype=np.int64)
    duration = num_frames / src_fps
    count = max(1, int(np.floor(duration * dst_fps + 1e-6)))
    idx = np.floor(np.arange(count) * src_fps / dst_fps + 0.5).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def read_video(path: str, max_frames: int | None = None, fps: float | None = None) -> Clip:
    """Decode a video file to RGB frames; optionally retime to ``fps`` and keep ``max_frames``."""
    av = require("av", "Reading driving videos", "av")
    if not os.path.isfile(path):
        raise FantasyPortraitError(f"Driving video not found: {path}")
    name, size = os.path.basename(path), os.path.getsize(path)
    if size == 0:
        raise FantasyPortraitError(f"{name} is empty (0 bytes): it was not written or copied completely. Copy or "
                                   "download it again.")
    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
            raise FantasyPortraitError(
                f"{name} is an MP4/MOV video that cannot be opened: it is incomplete (an interrupted download, "
                "copy or recording leaves out the index FFmpeg needs). Copy or download it again, or re-export it."
            ) from exc
        raise FantasyPortraitError(
            f"{name} is not a video file FFmpeg can read ({size} bytes, starting with {head[:8]!r}; FFmpeg: "
            f"{getattr(exc, 'strerror', None) or exc}). Use a video such as MP4, MOV, WebM or AVI.") from exc
    with container:
        if not container.streams.video:
            raise FantasyPortraitError(f"{name} has no video stream (an audio file?): use a video of the driving face.")
        stream = container.streams.video[0]
        src_fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        # frames needed from the source before retiming
        limit = None
        if max_frames is not None:
            limit = max_frames if fps is None else int(np.ceil(max_frames * src_fps / fps)) + 1
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) >= limit:
                    break
        except av.error.FFmpegError as exc:
            if not frames:
                raise FantasyPortraitError(
                    f"{name} opens but its video could not be decoded ({getattr(exc, 'strerror', None) or exc}): it "
                    "is damaged or incomplete. Copy or download it again, or re-export it.") from exc
    if not frames:
        raise FantasyPortraitError(f"{name} contains no video frames: it is empty or incomplete.")
    out = np.stack(frames)
    out_fps = src_fps
    if fps is not None and abs(fps - src_fps) > 1e-3:
        out = out[resample_indices(len(out), src_fps, fps)]
        out_fps = float(fps)
    if max_frames is not None:
        out = out[:max_frames]
    return Clip(frames=out, fps=out_fps, source=path)


def write_video(path: str, frames: np.ndarray, fps: float) -> None:
    """Write ``[F, H, W, 3]`` uint8 RGB frames as an H.264 (or MPEG-4) video."""
    av = require("av", "Writing preview videos", "av")
    from fractions import Fraction

    frames = np.asarray(frames)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in frames:
            packet = stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24"))
            container.mux(packet)
        container.mux(stream.encode())
