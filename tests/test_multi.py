"""Multi-portrait regions, masks and the absence of expression leakage, with real numbers."""

import numpy as np
import pytest
import torch

from fantasyportrait_core import FantasyPortraitError, adapter_cross_attention
from fantasyportrait_core.branch.multi import (build_mask, combine, common_length, expand_region, label_map,
                                        map_boxes_to_output, motion_margins, parse_mapping, parse_strengths,
                                        token_grid, token_labels)

HEADS, DIM, WIN = 2, 16, 97


def released_mask_and_windows(windows, tokens):
    """The released construction: drivers concatenated in reverse order, token blocks labelled 1..N in
    that concatenated order, boolean SDPA mask ~(video_label == token_label) (True = attend)."""
    n = len(windows)
    concat = torch.cat(windows[::-1], dim=2)
    block_label = torch.arange(1, n + 1).repeat_interleave(windows[0].shape[2])
    mask = ~(tokens[:, None] == block_label[None, :])
    return concat, mask.unsqueeze(0).expand(windows[0].shape[1], -1, -1)


def layout(width, height, boxes):
    tokens = token_labels(label_map(boxes, width, height))
    return tokens


def run(q, windows_cat, mask, wk, wv, **kw):
    k, v = torch.nn.functional.linear(windows_cat, wk), torch.nn.functional.linear(windows_cat, wv)
    return adapter_cross_attention(q, k, v, HEADS, mask=mask, **kw)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    width, height, t = 256, 128, 2
    rows, cols = token_grid(width, height)
    q = torch.randn(1, t * rows * cols, DIM, generator=g, dtype=torch.float64)
    wk = torch.randn(DIM, 8, generator=g, dtype=torch.float64)
    wv = torch.randn(DIM, 8, generator=g, dtype=torch.float64)
    windows = [torch.randn(1, t, WIN, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    return g, width, height, t, q, wk, wv, windows


def test_two_persons_match_the_released_construction(setup):
    g, width, height, t, q, wk, wv, windows = setup
    tokens = layout(width, height, [[0, 0, 96, 128], [160, 0, 256, 128]])
    assert set(tokens.tolist()) == {0, 1, 2}
    ours = run(q, torch.cat(windows[:2], 2), build_mask(tokens, 2, WIN, t), wk, wv)
    rel_windows, rel_mask = released_mask_and_windows(windows[:2], tokens)
    released = run(q, rel_windows, rel_mask, wk, wv)
    torch.testing.assert_close(ours, released, rtol=1e-12, atol=1e-12)


def test_three_persons_released_construction_leaks_ours_does_not(setup):
    g, width, height, t, q, wk, wv, windows = setup
    tokens = layout(width, height, [[0, 0, 80, 128], [96, 0, 160, 128], [176, 0, 256, 128]])
    rel_windows, rel_mask = released_mask_and_windows(windows, tokens)
    released = run(q, rel_windows, rel_mask, wk, wv)
    ours = run(q, torch.cat(windows, 2), build_mask(tokens, 3, WIN, t), wk, wv)
    face0 = (tokens == 1).repeat(t)
    assert not torch.allclose(released[0, face0], ours[0, face0])
    # the released mask lets face 1 (label 1) attend to every block but its own label
    assert rel_mask[0, tokens.tolist().index(1)].sum() == 2 * WIN


def test_no_leakage_between_three_persons(setup):
    g, width, height, t, q, wk, wv, windows = setup
    tokens = layout(width, height, [[0, 0, 80, 128], [96, 0, 160, 128], [176, 0, 256, 128]])
    mask = build_mask(tokens, 3, WIN, t)
    base = run(q, torch.cat(windows, 2), mask, wk, wv)
    labels = tokens.repeat(t)
    for j in range(3):
        changed = [w.clone() for w in windows]
        changed[j] += torch.randn(changed[j].shape, generator=g, dtype=torch.float64)
        out = run(q, torch.cat(changed, 2), mask, wk, wv)
        moved = (out - base).abs().amax(-1)[0]
        for i in range(3):
            if i != j:
                assert torch.equal(out[0, labels == i + 1], base[0, labels == i + 1]), (i, j)
        assert (moved[labels == j + 1] > 0).all()
        assert (moved[labels == 0] > 0).all()  # background attends to every driver (released)
    none = run(q, torch.cat(windows, 2), build_mask(tokens, 3, WIN, t, background="none"), wk, wv)
    assert torch.count_nonzero(none[0, labels == 0]) == 0
    torch.testing.assert_close(none[0, labels != 0], base[0, labels != 0])


def test_per_person_strength_scales_only_that_region(setup):
    g, width, height, t, q, wk, wv, windows = setup
    tokens = layout(width, height, [[0, 0, 80, 128], [176, 0, 256, 128]])
    from fantasyportrait_core.branch.multi import query_scales

    mask = build_mask(tokens, 2, WIN, t)
    base = run(q, torch.cat(windows[:2], 2), mask, wk, wv)
    scaled = run(q, torch.cat(windows[:2], 2), mask, wk, wv, query_scale=query_scales(tokens, [0.5, 2.0]))
    labels = tokens.repeat(t)
    torch.testing.assert_close(scaled[0, labels == 1], 0.5 * base[0, labels == 1])
    torch.testing.assert_close(scaled[0, labels == 2], 2.0 * base[0, labels == 2])
    torch.testing.assert_close(scaled[0, labels == 0], base[0, labels == 0])


@pytest.mark.parametrize("width, height", [(832, 480), (480, 832), (500, 300), (1084, 610), (72, 40)])
def test_mask_shapes_for_output_sizes(width, height):
    rows, cols = token_grid(width, height)
    assert (rows, cols) == (-(-(height // 8) // 2), -(-(width // 8) // 2))
    tokens = token_labels(label_map([[0, 0, width // 3, height], [width // 2, 0, width, height // 2]], width, height))
    assert tokens.shape == (rows * cols,)
    mask = build_mask(tokens, 2, WIN, 21)
    assert mask.shape == (21, rows * cols, 2 * WIN) and mask.dtype == torch.bool
    assert mask[:, tokens == 0].all()  # background rows attend everywhere
    assert (mask[0, tokens == 1][:, :WIN]).all() and not (mask[0, tokens == 1][:, WIN:]).any()


def test_token_labels_follow_the_released_max_pool():
    labels = np.zeros((48, 64), np.int64)
    labels[20:21, 40:41] = 2  # one pixel in token (1, 2)
    tokens = token_labels(labels).reshape(3, 4)
    assert tokens.tolist() == [[0, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    odd = np.ones((40, 72), np.int64)  # latent 5x9 -> padded to 6x10 -> tokens 3x5
    assert token_labels(odd).reshape(3, 5).tolist() == [[1] * 5] * 3


def test_motion_margins_and_region_expansion():
    boxes = np.array([[100, 100, 200, 200], [90, 105, 190, 205], [120, 60, 230, 180]], float)
    left, right, up, down = motion_margins(boxes)
    assert (left, right, up, down) == (0.1, 0.25, 0.25, 0.05)  # right 0.3 and up 0.4 capped at 0.25
    assert expand_region([10, 20, 110, 220], (0.1, 0.25, 0.25, 0.05), 120, 300) == [0, 0, 120, 230]


def test_boxes_follow_wan_centre_crop():
    # 1084x610 portrait into a 832x480 video: the wider source loses round((1084 - 1084 * (832/480) /
    # (1084/610)) / 2) = 13 px left and right, then 1058x610 scales to 832x480
    boxes = map_boxes_to_output(np.array([[225, 66, 405, 264]]), (1084, 610), (832, 480))
    np.testing.assert_allclose(boxes[0], [(225 - 13) * 832 / 1058, 66 * 480 / 610, (405 - 13) * 832 / 1058,
                                          264 * 480 / 610])
    same = map_boxes_to_output(np.array([[10, 20, 30, 40]]), (640, 480), (320, 240))
    np.testing.assert_allclose(same[0], [5, 10, 15, 20])


def test_mapping_strengths_and_lengths():
    assert parse_mapping("", 3) == [0, 1, 2]
    assert parse_mapping("2,1", 2) == [1, 0]
    with pytest.raises(FantasyPortraitError, match="names 3 drivers but the portrait has 2 faces"):
        parse_mapping("1,2,3", 2)
    with pytest.raises(FantasyPortraitError, match="exactly once"):
        parse_mapping("1,1", 2)
    with pytest.raises(FantasyPortraitError, match="numbers separated by commas"):
        parse_mapping("a,b", 2)
    assert parse_strengths("0.5", 3) == [0.5] * 3
    with pytest.raises(FantasyPortraitError, match="3 strengths given for 2 persons"):
        parse_strengths("1,1,1", 2)
    long, short = driver(17, 0.0), driver(9, 1.0)
    out, note = common_length([long, short])
    assert note == "the drivers have 17, 9 frames; all were trimmed to the shortest, 9"
    assert [d.num_frames for d in out] == [9, 9] and [d.windows.shape[1] for d in out] == [3, 3]
    assert torch.equal(out[0].tokens, long.tokens[:, :9 * 24]) and torch.equal(out[0].windows, long.windows[:, :3])
    assert common_length([long, long]) == ([long, long], None)


def driver(frames, value, channels=4):
    """One driver's expression tokens: every token of frame f is ``value + f``, windows as the released rule."""
    from fantasyportrait_core.tokens.encoding import ExpressionTokens
    from fantasyportrait_core.tokens.windows import build_windows

    tokens = (value + torch.arange(frames, dtype=torch.float32)).repeat_interleave(24)[None, :, None]
    tokens = tokens.expand(1, -1, channels).contiguous()
    return ExpressionTokens(tokens, build_windows(tokens, frames, 24), frames, 24)


def test_combine_counts_must_fit_and_puts_everything_in_face_order():
    box = [np.array([[0, 0, 10, 10.0]])]
    with pytest.raises(FantasyPortraitError, match="2 face\\(s\\) but 1 driver"):
        combine([driver(5, 0.0)], box, np.array([[0, 0, 10, 10], [20, 0, 30, 10.0]]), 64, 64)
    first, second = driver(5, 0.0), driver(9, 100.0)
    out = combine([first, second], box * 2, np.array([[0, 0, 16, 16], [32, 0, 48, 16.0]]), 64, 64, mapping=[1, 0],
                  strengths=[0.5, 1.0])
    assert out.notes == ["the drivers have 5, 9 frames; all were trimmed to the shortest, 5"]
    assert out.expression.num_frames == 5 and out.expression.tokens_per_frame == 24
    # face 0 is driven by driver 2: its tokens are the first row and its windows come first, cut to 5 frames
    assert torch.equal(out.expression.tokens, torch.cat([second.tokens[:, :5 * 24], first.tokens]))
    assert torch.equal(out.expression.windows, torch.cat([second.windows[:, :2], first.windows], dim=2))
    assert out.mask.shape == (2, 16, 2 * WIN) and out.labels.shape == (16,)
    assert torch.equal(out.mask[0], build_mask(out.labels, 2, WIN, 1, "all")[0])
    assert set(out.query_scale.tolist()) <= {0.5, 1.0} and 0.5 in out.query_scale.tolist()  # face 0's strength


def test_real_two_person_regions():
    from fantasyportrait_core.faces.detector import FaceDetector
    from fantasyportrait_core.faces.landmarks import LandmarkModel
    from fantasyportrait_core.branch.multi import draw_regions
    from fantasyportrait_core.faces.tracking import track_faces
    from media import read_frames
    from media import media_path, model_path, read_rgb

    det = FaceDetector(model_path("face_det.onnx"))
    lmk = LandmarkModel(model_path("face_landmark.onnx"))
    portrait = read_rgb("two_person.png")
    boxes, _ = det.detect(portrait)
    boxes = boxes[np.argsort((boxes[:, 0] + boxes[:, 2]) / 2)]
    assert len(boxes) == 2
    tracks = track_faces(read_frames(media_path("two_person.mp4"), max_frames=81), det, lmk)
    assert tracks.num_persons == 2
    for width, height in [(832, 480), (1084, 610), (500, 300)]:
        faces = map_boxes_to_output(boxes, (portrait.shape[1], portrait.shape[0]), (width, height))
        out = combine([driver(81, 0.0)] * 2, [tracks.boxes[0], tracks.boxes[1]], faces, width, height)
        regions = out.regions
        for i in range(2):
            x0, y0, x1, y1 = regions[i]
            fx0, fy0, fx1, fy1 = faces[i]
            assert x0 <= fx0 + 1 and y0 <= fy0 + 1 and x1 >= fx1 - 1 and y1 >= fy1 - 1  # contains its face
            ox0, oy0, ox1, oy1 = faces[1 - i]
            assert x1 <= ox0 or x0 >= ox1 or y1 <= oy0 or y0 >= oy1  # does not touch the other face
        rows, cols = token_grid(width, height)
        assert out.mask.shape == (21, rows * cols, 2 * WIN)
        counts = torch.bincount(out.labels, minlength=3)
        assert counts[1] > 0 and counts[2] > 0 and counts[0] > counts[1]
    preview = draw_regions(portrait, [list(map(int, r)) for r in
                                      combine([driver(5, 0.0)] * 2, [tracks.boxes[0], tracks.boxes[1]], boxes,
                                              portrait.shape[1], portrait.shape[0]).regions], boxes)
    assert preview.shape == portrait.shape and (preview != portrait).any()
