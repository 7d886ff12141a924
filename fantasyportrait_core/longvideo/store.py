"""Finished chunks of a long video kept on disk, so a run that was cancelled, crashed or lost its server resumes at
the first unfinished chunk.

A run lives in ``ROOT/<key>/``, where the key is a hash of everything that determines the video (the caller
feeds it with :class:`RunKey`): ``chunk_0003.mp4`` is chunk 3's new frames (a video segment), ``chunk_0003.json``
says it is complete, ``tail_0003.safetensors`` holds its last frames (float32, exactly what the next chunk starts
from; only the newest finished chunk's is kept), and ``video.mp4`` is the joined result once every chunk is done (the segments
and the tail are then deleted). Files are written under a temporary name and renamed, so a crash never leaves a
file that looks finished. Runs not touched for ``STALE_DAYS`` days are deleted when another run starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time

import numpy as np
import torch

from .segments import join_segments, write_segment

STALE_DAYS = 7.0
VIDEO = "video.mp4"


class RunKey:
    """A SHA-256 over the values that determine a run: tensors (dtype, shape and bytes), numbers, strings,
    ``None`` and nested lists, tuples and dicts (keys sorted)."""

    def __init__(self):
        self._hash = hashlib.sha256()

    def add(self, value) -> "RunKey":
        h = self._hash
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            self.add(torch.from_numpy(np.ascontiguousarray(value)))
        elif isinstance(value, dict):
            h.update(b"D%d" % len(value))
            for k in sorted(value, key=str):
                self.add(str(k)).add(value[k])
        elif isinstance(value, (list, tuple)):
            h.update(b"L%d" % len(value))
            for v in value:
                self.add(v)
        elif isinstance(value, float):
            h.update(b"F" + struct.pack("<d", value))
        elif isinstance(value, (bool, int)) or value is None:
            h.update(f"I{value!r}".encode())
        else:
            h.update(b"S" + str(value).encode())
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:24]


def _write_json(path: str, data: dict) -> None:
    with open(path + ".partial", "w") as fh:
        json.dump(data, fh)
    os.replace(path + ".partial", path)


class ChunkStore:
    """The finished chunks of one run (``root/key``)."""

    def __init__(self, root: str, key: str):
        self.dir = os.path.join(root, key)

    def _chunk(self, index: int, ext: str, name: str = "chunk") -> str:
        return os.path.join(self.dir, f"{name}_{index:04d}.{ext}")

    @property
    def video_path(self) -> str:
        return os.path.join(self.dir, VIDEO)

    def finished_video(self) -> str | None:
        """The joined video of a run that completed earlier, or None."""
        ok = os.path.exists(os.path.join(self.dir, "done.json")) and os.path.exists(self.video_path)
        return self.video_path if ok else None

    def is_done(self, index: int) -> bool:
        return os.path.exists(self._chunk(index, "json")) and os.path.exists(self._chunk(index, "mp4"))

    def finished_chunks(self, count: int) -> int:
        """How many chunks, from the first, are finished (resume from this one); the tail of the last of them
        must be there too."""
        done = 0
        while done < count and self.is_done(done):
            done += 1
        while done and not os.path.exists(self._chunk(done - 1, "safetensors", "tail")):
            done -= 1  # (never happens with files written by save(); a tail deleted by hand)
        return done

    def save(self, index: int, new_frames: np.ndarray, tail: torch.Tensor, fps: float, info: dict) -> None:
        """Keep chunk ``index``: its new frames (uint8 ``[F, H, W, 3]``) as a segment, the frames the next chunk
        starts from (``tail``), and a marker saying it is complete (written last)."""
        from safetensors.torch import save_file

        os.makedirs(self.dir, exist_ok=True)
        write_segment(self._chunk(index, "mp4"), new_frames, fps)
        tail_path = self._chunk(index, "safetensors", "tail")
        save_file({"frames": tail.detach().float().cpu().contiguous()}, tail_path + ".partial")
        os.replace(tail_path + ".partial", tail_path)
        _write_json(self._chunk(index, "json"), {**info, "index": index, "frames": int(len(new_frames)),
                                                 "time": time.time()})
        if index and os.path.exists(self._chunk(index - 1, "safetensors", "tail")):
            os.remove(self._chunk(index - 1, "safetensors", "tail"))

    def tail(self, index: int) -> torch.Tensor:
        """The last frames of finished chunk ``index`` (the newest one)."""
        from safetensors.torch import load_file

        return load_file(self._chunk(index, "safetensors", "tail"))["frames"]

    def join(self, count: int, fps: float, audio: dict | None = None) -> str:
        """The whole video from chunks ``0..count-1`` (with ``audio``); the chunk files are deleted after."""
        segments = [self._chunk(i, "mp4") for i in range(count)]
        join_segments(segments, self.video_path, fps, audio)
        _write_json(os.path.join(self.dir, "done.json"), {"chunks": count, "time": time.time()})
        for name in os.listdir(self.dir):
            if name.startswith(("chunk_", "tail_")):
                os.remove(os.path.join(self.dir, name))
        return self.video_path


def remove_stale(root: str, keep: str | None = None, days: float = STALE_DAYS, now: float | None = None) -> list[str]:
    """Delete the runs under ``root`` whose newest file is older than ``days`` (never ``keep``); returns their
    keys."""
    if not os.path.isdir(root):
        return []
    now = time.time() if now is None else now
    removed = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name == keep or not os.path.isdir(path):
            continue
        times = [os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)] or [os.path.getmtime(path)]
        if now - max(times) > days * 86400:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed
