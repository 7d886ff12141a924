"""The motion check's picture: per face, its mouth opening and head roll over time beside its driver's, and the
leakage matrix as a heat map (drawn with OpenCV; RGB uint8)."""

from __future__ import annotations

import numpy as np

from ..motion.extraction import PERSON_COLOURS

WIDTH, ROW, PAD = 960, 200, 12
GREY, WHITE, TEXT = (150, 150, 150), (255, 255, 255), (30, 30, 30)


def _text(img, text, org, scale=0.45, colour=TEXT):
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _curves(img, box, series, title):
    """Line plot of ``series`` ([(values, colour), ...]) into ``box`` (x0, y0, x1, y1), one shared y range."""
    import cv2

    x0, y0, x1, y1 = box
    cv2.rectangle(img, (x0, y0), (x1, y1), (210, 210, 210), 1)
    _text(img, title, (x0 + 6, y0 + 16))
    values = [np.asarray(v, np.float64) for v, _ in series if len(v)]
    if not values:
        return
    lo = min(float(np.nanmin(v)) for v in values)
    hi = max(float(np.nanmax(v)) for v in values)
    hi = hi if hi - lo > 1e-9 else lo + 1.0
    top, bottom = y0 + 24, y1 - 8
    for v, colour in series:
        v = np.asarray(v, np.float64)
        if len(v) < 2:
            continue
        xs = x0 + 6 + np.arange(len(v)) * (x1 - x0 - 12) / (len(v) - 1)
        ys = bottom - (v - lo) / (hi - lo) * (bottom - top)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
    _text(img, f"{hi:.3g}", (x1 - 60, top + 10), 0.38, GREY)
    _text(img, f"{lo:.3g}", (x1 - 60, bottom), 0.38, GREY)


def _heatmap(img, box, matrix):
    import cv2

    x0, y0, x1, y1 = box
    m = np.asarray(matrix, np.float64)
    rows, cols = m.shape
    cell = min((x1 - x0) // max(cols, 1), (y1 - y0 - 24) // max(rows, 1), 90)
    _text(img, "leakage: motion corr (rows: output faces, columns: their drivers)", (x0, y0 + 14))
    for i in range(rows):
        for j in range(cols):
            v = 0.0 if not np.isfinite(m[i, j]) else float(np.clip(m[i, j], 0, 1))
            colour = tuple(int(c) for c in (255 * (1 - v) + 40 * v, 255 * (1 - v) + 110 * v, 255 * (1 - v) + 200 * v))
            p0 = (x0 + j * cell, y0 + 24 + i * cell)
            cv2.rectangle(img, p0, (p0[0] + cell - 2, p0[1] + cell - 2), colour, -1)
            label = "n/a" if not np.isfinite(m[i, j]) else f"{m[i, j]:.2f}"
            _text(img, label, (p0[0] + 8, p0[1] + cell // 2 + 5), 0.5, WHITE if v > 0.55 else TEXT)


def draw_report(report: dict) -> np.ndarray:
    """The picture of a motion-check report (``[H, 960, 3]`` uint8 RGB)."""
    persons = report["persons"]
    faces = len(report["leakage"])
    heat = 40 + min(90, (ROW - 30) // max(faces, 1)) * faces
    img = np.full((PAD + len(persons) * (ROW + PAD) + heat + PAD, WIDTH, 3), 255, np.uint8)
    half = (WIDTH - 3 * PAD) // 2
    for k, p in enumerate(persons):
        y = PAD + k * (ROW + PAD)
        colour = PERSON_COLOURS[k % len(PERSON_COLOURS)]
        curves = p["curves"]
        _curves(img, (PAD, y, PAD + half, y + ROW),
                [(curves["mouth_open"]["driver"], GREY), (curves["mouth_open"]["output"], colour)],
                f"face {p['face']}: mouth opening (grey: driver)  corr " + (
                    "n/a" if p["mouth_open_corr"] is None else f"{p['mouth_open_corr']:.2f}"))
        _curves(img, (2 * PAD + half, y, WIDTH - PAD, y + ROW),
                [(curves["head_roll"]["driver"], GREY), (curves["head_roll"]["output"], colour)],
                f"head roll, degrees  (best offset {p['offset']} frames)")
    _heatmap(img, (PAD, PAD + len(persons) * (ROW + PAD), WIDTH - PAD, img.shape[0] - PAD), report["leakage"])
    return img


def draw_message(text: str, width: int = WIDTH) -> np.ndarray:
    """A picture of a message (why a check could not be measured), wrapped to the width."""
    import textwrap

    lines = textwrap.wrap(text, 110)
    img = np.full((2 * PAD + 20 * len(lines), width, 3), 255, np.uint8)
    for k, line in enumerate(lines):
        _text(img, line, (PAD, PAD + 14 + 20 * k))
    return img
