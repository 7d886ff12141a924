"""How a long driving clip is cut into chunks that Wan samples one after another.

Chunk ``k`` covers output (and driver) frames ``[start, start + length)``. Chunk 0 starts from the portrait; every
later chunk starts from the last ``overlap`` frames of the chunk before it, which Wan 2.1 I2V takes as known start
frames (WanImageToVideo with a multi-frame start image: those frames in the concat latent, their latent frames
masked as known). The overlapping frames are sampled again but appear once in the output (from the earlier chunk):
each chunk after the first adds ``length - overlap`` new frames.

Both the chunk length and the overlap are Wan frame counts, 4k+1: then every chunk starts on a multiple of 4, the
known frames fill whole latent frames, and the last chunk of a 4k+1 clip is itself 4k+1 frames long.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FantasyPortraitError
from ..tokens.windows import VAE_TEMPORAL_STRIDE, is_valid_frame_count, nearest_valid_frame_counts

DEFAULT_CHUNK = 81  # frames Wan 2.1 was trained on
DEFAULT_OVERLAP = 9  # 3 latent frames known at the start of every later chunk
MIN_NEW_FRAMES = VAE_TEMPORAL_STRIDE  # a chunk must add at least one latent frame


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first driver/output frame it samples
    length: int  # frames it samples (4k+1)
    known: int  # frames at its start taken from the chunk before (0 for the first chunk)

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def new_frames(self) -> int:
        """Frames this chunk adds to the output (the known ones come from the chunk before)."""
        return self.length - self.known


def _check_count(value: int, name: str, minimum: int) -> None:
    if value < minimum or not is_valid_frame_count(value):
        lower, upper = nearest_valid_frame_counts(max(value, minimum))
        hint = f"use {lower} or {upper}" if lower != upper and lower >= minimum else f"use {max(upper, minimum)}"
        raise FantasyPortraitError(f"{name} must be a Wan frame count, 4k+1 (e.g. 5, 9, 17, 81), of at least "
                                   f"{minimum}; got {value}: {hint}.")


def plan_chunks(num_frames: int, chunk_length: int = DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """The chunks that sample ``num_frames`` (4k+1) frames, ``chunk_length`` frames each (the last may be shorter),
    each after the first starting from the last ``overlap`` frames of the one before."""
    _check_count(chunk_length, "chunk_length", 5)
    _check_count(overlap, "overlap", 1)
    if overlap > chunk_length - MIN_NEW_FRAMES:
        raise FantasyPortraitError(
            f"overlap ({overlap} frames) must be shorter than chunk_length ({chunk_length}) by at least "
            f"{MIN_NEW_FRAMES} frames, or a chunk adds nothing: lower overlap to {chunk_length - MIN_NEW_FRAMES} or "
            "less (9 is the default).")
    if not is_valid_frame_count(num_frames):
        lower, upper = nearest_valid_frame_counts(num_frames)
        raise FantasyPortraitError(f"The driving motion has {num_frames} frames; Wan needs 4k+1 (FantasyPortrait "
                                   f"Encode trims to {lower} by itself): set num_frames to {lower} or {upper}.")
    if num_frames < chunk_length:
        raise FantasyPortraitError(
            f"The driving motion has {num_frames} frames, fewer than one chunk ({chunk_length}): lower chunk_length "
            f"to {nearest_valid_frame_counts(num_frames)[0]} or less, or use FantasyPortrait Sampler, which samples a "
            "clip this short in one pass.")
    chunks = [Chunk(0, 0, chunk_length, 0)]
    step = chunk_length - overlap
    while chunks[-1].end < num_frames:
        start = chunks[-1].start + step
        chunks.append(Chunk(len(chunks), start, min(chunk_length, num_frames - start), overlap))
    return chunks


def sampled_frames(chunks: list[Chunk]) -> int:
    """Frames sampled in all (the output has ``sum(new_frames)``; the rest is the cost of the joins)."""
    return sum(c.length for c in chunks)
