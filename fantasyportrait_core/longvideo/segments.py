"""A long video written as it is made: each chunk's new frames become one video segment on disk, and the segments
are joined into one file (their packets copied, not encoded again) with the driving clip's audio."""

from __future__ import annotations

import os

import numpy as np

from ..errors import FantasyPortraitError, require
from ..video import write_video


CRF = 17  # H.264 quality of the video (visually lossless; ComfyUI's Save Video copies the stream as it is)


def write_segment(path: str, frames: np.ndarray, fps: float) -> None:
    """uint8 ``[F, H, W, 3]`` frames as a video segment at ``fps``, written to a temporary name first so a
    segment file is never half written."""
    partial = path + ".partial"
    write_video(partial, frames, fps, container_format="mp4", crf=CRF)
    os.replace(partial, path)


def _audio_frame(av, waveform: np.ndarray, rate: int):
    """A ``[channels, samples]`` float waveform as one packed audio frame (mono or stereo: further channels are
    left out)."""
    waveform = waveform[:2]
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform.T.reshape(1, -1), dtype=np.float32),
                                       format="flt", layout="mono" if len(waveform) == 1 else "stereo")
    frame.sample_rate = rate
    frame.pts = 0
    return frame


def join_segments(paths: list[str], out_path: str, fps: float, audio: dict | None = None) -> int:
    """One video at ``out_path`` (MP4) from the segments in order, each segment's packets shifted to follow the
    one before; ``audio`` (``{"waveform": [1, C, S] or [C, S], "sample_rate": R}``, as ComfyUI's AUDIO) is cut to
    the video's duration and added as AAC. Returns the number of video frames written."""
    av = require("av", "Writing the long video", "av")
    if not paths:
        raise FantasyPortraitError("There is nothing to join: no chunk of the long video was made.")
    partial = out_path + ".partial"
    frames = 0
    with av.open(partial, mode="w", format="mp4") as out:
        with av.open(paths[0]) as first:  # every stream is added before the first packet is written
            out_stream = out.add_stream_from_template(first.streams.video[0])
        audio_stream = wave = None
        if audio is not None:
            wave = audio["waveform"]
            wave = np.asarray(wave.cpu() if hasattr(wave, "cpu") else wave, dtype=np.float32)
            wave, rate = (wave[0] if wave.ndim == 3 else wave), int(audio["sample_rate"])
            if wave.shape[-1] > 0:
                audio_stream = out.add_stream("aac", rate=rate)
        for path in paths:
            with av.open(path) as seg:
                stream = seg.streams.video[0]
                ticks = round(frames / fps / stream.time_base)  # where this segment starts, in its time base
                for packet in seg.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream packet
                        continue
                    packet.pts += ticks
                    packet.dts += ticks
                    packet.stream = out_stream
                    out.mux(packet)
                    frames += 1
        if audio_stream is not None:
            wave = wave[:, :int(round(frames / fps * rate))]
            out.mux(audio_stream.encode(_audio_frame(av, wave, rate)))
            out.mux(audio_stream.encode(None))
    os.replace(partial, out_path)
    return frames
