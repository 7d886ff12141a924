"""Long videos, ComfyUI-free parts: the chunk plan, one chunk's tokens and windows, the colour match on a synthetic
drift, the segments joined with the audio, and the chunk store (keys, resume, stale runs)."""

import json
import os
import time

import numpy as np
import pytest
import torch

from fantasyportrait_core.branch.embeds import PortraitEmbeds
from fantasyportrait_core.errors import FantasyPortraitError
from fantasyportrait_core.longvideo.colour import frame_stats, match_colour, reference_stats
from fantasyportrait_core.longvideo.plan import plan_chunks, sampled_frames
from fantasyportrait_core.longvideo.segments import join_segments, write_segment
from fantasyportrait_core.longvideo.store import ChunkStore, RunKey, remove_stale
from fantasyportrait_core.tokens.encoding import ExpressionTokens
from fantasyportrait_core.tokens.windows import build_windows
from media import media_path, read_frames


def video_frame_count(path: str) -> int:
    """Frames of a file's first video stream (decoded, not taken from the header)."""
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def colour_error(frames: torch.Tensor, reference) -> float:
    """Mean absolute difference of the frames' channel means and deviations from ``reference`` (0..1 units)."""
    mean, std = frame_stats(frames)
    return float(((mean - reference.mean).abs().mean() + (std - reference.std).abs().mean()) / 2)


def test_chunks_cover_the_clip_once_with_their_overlap():
    chunks = plan_chunks(1501, 81, 9)  # 60 s at 25 fps
    assert [(c.start, c.length, c.known) for c in chunks[:3]] == [(0, 81, 0), (72, 81, 9), (144, 81, 9)]
    assert chunks[-1].end == 1501 and chunks[-1].length == 1501 - chunks[-1].start
    assert len(chunks) == 21 and sum(c.new_frames for c in chunks) == 1501
    assert all(c.start % 4 == 0 and (c.length - 1) % 4 == 0 and c.new_frames >= 4 for c in chunks)
    assert sampled_frames(chunks) == 1501 + 20 * 9  # the joins cost 9 frames each
    assert [(c.start, c.length) for c in plan_chunks(81, 81, 9)] == [(0, 81)]
    assert [(c.start, c.length) for c in plan_chunks(85, 81, 9)] == [(0, 81), (72, 13)]
    assert [(c.start, c.length) for c in plan_chunks(21, 9, 5)] == [(0, 9), (4, 9), (8, 9), (12, 9)]


@pytest.mark.parametrize("args, message", [
    ((161, 81, 81), "overlap (81 frames) must be shorter than chunk_length (81) by at least 4 frames"),
    ((161, 81, 79), "overlap must be a Wan frame count, 4k+1"),
    ((161, 80, 9), "chunk_length must be a Wan frame count, 4k+1 (e.g. 5, 9, 17, 81), of at least 5; got 80: use "
                   "77 or 81"),
    ((161, 81, 0), "overlap must be a Wan frame count"),
    ((49, 81, 9), "The driving motion has 49 frames, fewer than one chunk (81): lower chunk_length to 49 or less"),
    ((160, 81, 9), "The driving motion has 160 frames; Wan needs 4k+1"),
])
def test_bad_chunk_settings_say_what_to_change(args, message):
    with pytest.raises(FantasyPortraitError) as err:
        plan_chunks(*args)
    assert message in str(err.value)


def test_a_chunks_windows_are_those_of_its_frames_alone():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 33 * 3, 5, generator=g)
    one = ExpressionTokens(tokens[:1], build_windows(tokens[:1], 33, 3), 33, 3)
    chunk = one.frames(8, 17)
    assert torch.equal(chunk.tokens, tokens[:1, 24:75])
    assert torch.equal(chunk.windows, build_windows(tokens[:1, 24:75], 17, 3))
    assert chunk.windows[0, 0, 3:].abs().sum() == 0  # its first frame opens a window, zero padded as released
    assert torch.equal(one.frames(0, 17).windows, one.windows[:, :5])  # the first chunk: a prefix of the clip's
    # two persons side by side (Multi-Portrait Combine): still side by side, each person's own frames
    both = ExpressionTokens(tokens, torch.cat(build_windows(tokens, 33, 3).unbind(0), dim=1)[None], 33, 3)
    part = both.frames(8, 17)
    assert part.windows.shape == (1, 5, 26, 5)
    assert torch.equal(part.windows[:, :, 13:], build_windows(tokens[1:, 24:75], 17, 3))
    mask = torch.ones(9, 4, 26, dtype=torch.bool)
    embeds = PortraitEmbeds(both, fps=25.0, mask=mask, size=(32, 32), driver_boxes=np.arange(33 * 4).reshape(33, 4))
    sub = embeds.frames(8, 17)
    assert sub.mask.shape == (5, 4, 26) and sub.size == (32, 32) and sub.fps == 25.0
    assert sub.driver_boxes[0, 0] == 32 and len(sub.driver_boxes) == 17
    with pytest.raises(FantasyPortraitError, match="Frames 20..36 were asked for but the driving motion has 33"):
        one.frames(20, 17)


def drifted(frames: torch.Tensor, per_frame: float):
    """Frames whose colour drifts a little more every frame: brighter, warmer, more contrast."""
    t = torch.arange(len(frames), dtype=torch.float32)[:, None, None, None]
    gain = 1 + per_frame * t * torch.tensor([1.0, 0.6, 0.2])
    return ((frames - 0.5) * gain + 0.5 + per_frame * t * torch.tensor([0.5, 0.25, -0.25])).clamp(0, 1)


def test_the_colour_match_removes_a_synthetic_drift():
    # a real talking head, its levels kept inside 0.1..0.9 so that the drift below is not clipped away
    frames = 0.1 + 0.8 * torch.from_numpy(read_frames(media_path("jgz.mp4"), 60)).float() / 255.0
    reference = reference_stats(frames[:1])
    drift = drifted(frames, 0.004)  # by the last frame: 24% more red contrast, +12% red
    before = colour_error(drift[-15:], reference)
    matched = match_colour(drift, reference)
    after = colour_error(matched[-15:], reference)
    assert before > 0.04 and after < 0.05 * before, (before, after)  # measured: 0.045 -> 0.0007
    # measured against the undrifted frames, what is left is the clip's own small colour changes (0.038 -> 0.0075)
    assert float((matched - frames).abs().mean()) < 0.25 * float((drift - frames).abs().mean())
    # a clip that does not drift is left nearly as it is (0.0064 on 0..1)
    still = match_colour(frames, reference)
    assert float((still - frames).abs().mean()) < 0.01
    assert still.dtype == frames.dtype and float(still.min()) >= 0 and float(still.max()) <= 1


def test_segments_join_into_one_video_with_the_audio_cut_to_it(tmp_path):
    import av

    paths = []
    for k, n in enumerate([9, 4, 4]):
        frames = np.full((n, 48, 64, 3), 40 * k + 20, np.uint8)
        paths.append(str(tmp_path / f"seg{k}.mp4"))
        write_segment(paths[-1], frames, 12.5)
    assert not any(p.endswith(".partial") for p in os.listdir(tmp_path))
    wave = torch.sin(torch.arange(22050 * 5) / 9.0)[None, None]  # 5 s of mono audio, longer than the video
    out = str(tmp_path / "joined.mp4")
    assert join_segments(paths, out, 12.5, {"waveform": wave, "sample_rate": 22050}) == 17
    with av.open(out) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert float(video.average_rate) == 12.5
        assert float(audio.duration * audio.time_base) == pytest.approx(17 / 12.5, abs=0.03)
        means = [float(f.to_ndarray(format="rgb24").mean()) for f in c.decode(video=0)]
    assert len(means) == 17 and video_frame_count(out) == 17
    assert np.allclose(means, [20] * 9 + [60] * 4 + [100] * 4, atol=3)


def test_run_keys_change_with_any_value_and_only_then():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, generator=g)
    base = ["model", t, {"seed": 3, "cfg": 1.0}, (None, 2.5)]
    key = RunKey().add(base).hexdigest()
    assert key == RunKey().add(["model", t.clone(), {"cfg": 1.0, "seed": 3}, (None, 2.5)]).hexdigest()
    changed = [["model", t * 1.0001, {"seed": 3, "cfg": 1.0}, (None, 2.5)],
               ["model", t, {"seed": 4, "cfg": 1.0}, (None, 2.5)],
               ["model", t.double(), {"seed": 3, "cfg": 1.0}, (None, 2.5)],
               ["model", t.reshape(4, 3), {"seed": 3, "cfg": 1.0}, (None, 2.5)],
               ["model", t, {"seed": 3, "cfg": 1.0}, (None, 2.0)],
               ["model", t, {"seed": 3, "cfg": "1.0"}, (None, 2.5)]]
    assert len({key} | {RunKey().add(v).hexdigest() for v in changed}) == 7


def test_the_store_resumes_at_the_first_unfinished_chunk_and_cleans_up(tmp_path):
    root = str(tmp_path)
    store = ChunkStore(root, "run1")
    assert store.finished_chunks(4) == 0 and store.finished_video() is None
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    for i in range(2):
        store.save(i, frames + 50 * i, torch.full((3, 32, 32, 3), float(i)), 10.0, {"start": 4 * i})
    assert store.finished_chunks(4) == 2
    assert float(store.tail(1).mean()) == 1.0 and not os.path.exists(os.path.join(store.dir, "tail_0000.safetensors"))
    assert json.load(open(os.path.join(store.dir, "chunk_0001.json")))["frames"] == 5
    os.remove(os.path.join(store.dir, "chunk_0001.json"))  # a crash before chunk 1 was complete
    assert ChunkStore(root, "run1").finished_chunks(4) == 1 - 1  # chunk 0's tail is gone, so from the start
    store.save(1, frames + 50, torch.ones(3, 32, 32, 3), 10.0, {"start": 4})
    path = store.join(2, 10.0)
    assert video_frame_count(path) == 10 and store.finished_video() == path
    assert sorted(os.listdir(store.dir)) == ["done.json", "video.mp4"]
    old = ChunkStore(root, "old")
    old.save(0, frames, torch.zeros(1, 32, 32, 3), 10.0, {})
    week = time.time() - 8 * 86400
    for name in os.listdir(old.dir):
        os.utime(os.path.join(old.dir, name), (week, week))
    assert remove_stale(root, keep="run1") == ["old"]
    assert sorted(os.listdir(root)) == ["run1"]
