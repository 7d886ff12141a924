"""Per-latent-frame token windows: which frame's tokens land where, zeros in frame 0."""

import pytest
import torch

from fantasyportrait_core import FantasyPortraitError, build_windows, latent_frame_count
from fantasyportrait_core.tokens.windows import fit_frame_count, window_indices


def labelled_tokens(frames, n=24):
    """Token (f, s) carries the value 1000*(f+1) + s in every channel, so windows can be read back."""
    f = torch.arange(frames).repeat_interleave(n)
    s = torch.arange(n).repeat(frames)
    return (1000.0 * (f + 1) + s)[None, :, None].expand(1, frames * n, 3).clone()


def decode(value):
    value = int(value)
    return (value // 1000 - 1, value % 1000) if value else None


def test_released_window_layout_for_81_frames():
    tokens = labelled_tokens(81)
    win = build_windows(tokens, 81, 24)
    assert win.shape == (1, 21, 97, 3)
    # latent frame 0: frame 0's 24 tokens, then 73 zeros
    assert [decode(v) for v in win[0, 0, :24, 0]] == [(0, s) for s in range(24)]
    assert torch.count_nonzero(win[0, 0, 24:]) == 0
    # latent frame i >= 1: one stray token (last of frame 4i-4), then frames 4i-3 .. 4i in order
    for i in (1, 2, 20):
        slots = [decode(v) for v in win[0, i, :, 0]]
        assert slots[0] == (4 * i - 4, 23)
        assert slots[1:] == [(f, s) for f in range(4 * i - 3, 4 * i + 1) for s in range(24)]
    # the released flat ranges [96i-73, 96i+23]
    idx = window_indices(81, 24)
    for i in range(1, 21):
        assert idx[i, 0] == 96 * i - 73 and idx[i, -1] == 96 * i + 23


def test_single_frame_clip_has_one_window():
    win = build_windows(labelled_tokens(1), 1, 24)
    assert win.shape == (1, 1, 97, 3)
    assert torch.count_nonzero(win[0, 0, 24:]) == 0


def test_windows_keep_persons_apart():
    a, b = labelled_tokens(9), -labelled_tokens(9)
    win = build_windows(torch.cat([a, b]), 9, 24)
    torch.testing.assert_close(win[1], -win[0])


@pytest.mark.parametrize("frames", [2, 4, 8, 80])
def test_non_4k_plus_1_counts_are_refused_with_advice(frames):
    with pytest.raises(FantasyPortraitError, match="4k\\+1"):
        build_windows(torch.zeros(1, frames * 24, 3), frames, 24)


def test_zero_frames_are_refused():
    with pytest.raises(FantasyPortraitError, match="0 frames"):
        build_windows(torch.zeros(1, 0, 3), 0, 24)


def test_error_names_nearest_counts():
    with pytest.raises(FantasyPortraitError, match="Trim the driving clip to 77 frames or pad it to 81"):
        latent_frame_count(80)


def test_fit_trim_and_pad():
    feats = torch.arange(7.0)[:, None].expand(7, 2)
    trimmed, note = fit_frame_count(feats, "trim")
    assert trimmed.shape[0] == 5 and "trimmed" in note and "7 to 5" in note
    padded, note = fit_frame_count(feats, "pad")
    assert padded.shape[0] == 9 and padded[7:, 0].tolist() == [6.0, 6.0] and "7 to 9" in note
    same, note = fit_frame_count(feats[:5], "pad")
    assert same.shape[0] == 5 and note is None
    with pytest.raises(FantasyPortraitError, match="4k\\+1"):
        fit_frame_count(feats, "error")


def test_fit_to_an_asked_length():
    feats = torch.arange(17 * 2, dtype=torch.float32).reshape(1, 17, 2)
    out, note = fit_frame_count(feats, "trim", target=13)
    assert out.shape == (1, 13, 2) and torch.equal(out, feats[:, :13]) and note.startswith("trimmed")
    out, note = fit_frame_count(feats, "pad", target=21)
    assert out.shape == (1, 21, 2) and torch.equal(out[:, 17:], feats[:, 16:17].expand(1, 4, 2))
    assert note == "padded the driving features from 17 to 21 frames by repeating the last frame"
    assert fit_frame_count(feats, "trim", target=17) == (feats, None)
    with pytest.raises(FantasyPortraitError, match="has 17 frames but 21 were asked for; set frame_fit to pad"):
        fit_frame_count(feats, "trim", target=21)
    with pytest.raises(FantasyPortraitError, match=r"num_frames must be 0 \(the whole clip\) or 4k\+1 frames, as Wan "
                                                   r"makes them; got 19: use 17 or 21"):
        fit_frame_count(feats, "pad", target=19)
