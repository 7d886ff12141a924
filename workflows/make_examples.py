"""Makes the pack's example inputs (``examples/``) from two public-domain photographs (``examples/README.md`` says
which, and where they come from).

    python workflows/make_examples.py ASTRONAUT_PNG GRACE_HOPPER_JPG MODELS_DIR [OUT_DIR]   (default: examples/)

ASTRONAUT_PNG is scikit-image's ``skimage/data/astronaut.png`` (NASA), GRACE_HOPPER_JPG matplotlib's
``mpl-data/sample_data/grace_hopper.jpg`` (U.S. Navy); MODELS_DIR holds the released ``face_det.onnx`` and
``face_landmark.onnx``. The driving clips are made by warping each still photo: the released landmarks say where the
eyes, mouth and jaw are, and every frame moves them with a smooth backward displacement field (cv2.remap): the head
turns in the image plane, nods and leans, the jaw drops in syllable-like bursts (the opened mouth drawn dark) and the
eyes blink. Deterministic: the same inputs give the same files.
"""

from __future__ import annotations

import math
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 16
FRAMES = 97  # 6 s; 4k+1, and longer than one 81-frame chunk, so the long-video graphs run two chunks
SIZE = 512
MOUTH, EYES, CONTOUR = slice(118, 182), (slice(74, 96), slice(96, 118)), slice(0, 33)


def smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def window(x, centre, inner, outer):
    """1 within ``inner`` of ``centre``, falling smoothly to 0 at ``outer``."""
    return 1.0 - smoothstep(inner, outer, np.abs(x - centre))


class Face:
    """Where one face's parts are (from its 222 landmarks) and how it moves over time."""

    def __init__(self, points: np.ndarray, phase: float, blinks: tuple[float, ...]):
        contour = points[CONTOUR]
        self.centre = points.mean(0)
        self.width = contour[:, 0].max() - contour[:, 0].min()
        self.height = contour[:, 1].max() - points[:, 1].min()
        self.chin = contour[:, 1].max()
        mouth = points[MOUTH]
        self.mouth = mouth.mean(0)
        self.mouth_w = mouth[:, 0].max() - mouth[:, 0].min()
        self.eyes = [(points[e].mean(0), np.ptp(points[e][:, 0]), np.ptp(points[e][:, 1])) for e in EYES]
        self.phase, self.blinks = phase, blinks

    def state(self, t: float) -> dict:
        p = self.phase
        syllables = max(0.0, math.sin(2 * math.pi * 2.7 * t + p))  # bursts of jaw opening
        phrase = 0.5 + 0.5 * math.sin(2 * math.pi * 0.31 * t + 2 * p)  # louder and quieter stretches
        blink = max([max(0.0, 1 - abs(t - b) / 0.09) for b in self.blinks] + [0.0])
        return {"open": 0.42 * self.mouth_w * syllables * phrase, "blink": min(1.0, blink * 1.5),
                "roll": math.radians(7 * math.sin(2 * math.pi * 0.23 * t + p)),
                "scale": 1 + 0.04 * math.sin(2 * math.pi * 0.17 * t + 1 + p),
                "shift": (0.05 * self.width * math.sin(2 * math.pi * 0.19 * t + p),
                          0.04 * self.height * math.sin(2 * math.pi * 0.41 * t + 0.5 + p))}

    def head_source(self, x, y, s):
        """Where output pixel (x, y) comes from under this head's roll, scale and shift (about its centre)."""
        cx, cy = self.centre
        u, v = x - cx - s["shift"][0], y - cy - s["shift"][1]
        c, n = math.cos(-s["roll"]) / s["scale"], math.sin(-s["roll"]) / s["scale"]
        return cx + c * u - n * v, cy + n * u + c * v

    def local_offset(self, x, y, s):
        """Vertical backward offset of the jaw drop and the blinks at (head-frame) pixel (x, y)."""
        mx, my = self.mouth
        jaw = (window(x, mx, 0.22 * self.width, 0.45 * self.width)
               * smoothstep(my - 0.03 * self.height, my, y)
               * (1 - smoothstep(self.chin, self.chin + 0.3 * self.height, y)))
        dy = -s["open"] * jaw
        for (ex, ey), ew, eh in self.eyes:
            lid = window(x, ex, 0.45 * ew, 0.8 * ew) * window(y, ey, 0.9 * eh, 2.2 * eh)
            dy = dy - s["blink"] * 0.9 * eh * lid
        return dy

    def mouth_alpha(self, x, y, s):
        """The opened mouth's dark inside, drawn in the head's frame (soft edged)."""
        if s["open"] < 1:
            return np.zeros_like(x)
        mx, my = self.mouth
        r = ((x - mx) / (0.36 * self.mouth_w)) ** 2 + ((y - my - 0.5 * s["open"]) / (0.48 * s["open"])) ** 2
        return 1 - smoothstep(0.7, 1.0, r)


def animate(image: np.ndarray, faces: list[Face], frames: int = FRAMES, fps: int = FPS):
    """The frames (RGB uint8) of ``image`` with every face moving as its :class:`Face` says; with several faces
    each head moves only near itself."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    reach = [np.ones_like(x)] if len(faces) == 1 else [
        window(x, f.centre[0], 0.7 * f.width, 1.2 * f.width) * window(y, f.centre[1], 0.9 * f.height, 1.8 * f.height)
        for f in faces]
    dark = np.array([38, 18, 22], np.float64)
    for k in range(frames):
        t = k / fps
        sx, sy, alpha = x.copy(), y.copy(), np.zeros_like(x)
        for face, wgt in zip(faces, reach):
            s = face.state(t)
            hx, hy = face.head_source(x, y, s)
            qx, qy = x + wgt * (hx - x), y + wgt * (hy - y)
            sx += qx - x
            sy += qy - y + face.local_offset(qx, qy, s)
            alpha = np.maximum(alpha, wgt * face.mouth_alpha(qx, qy, s))
        frame = cv2.remap(image, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101).astype(np.float64)
        yield np.clip(frame * (1 - alpha[..., None]) + dark * alpha[..., None], 0, 255).astype(np.uint8)


def write_clip(path: str, frames, fps: int = FPS) -> None:
    import av

    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "20", "preset": "slow"}
        for k, frame in enumerate(frames):
            if k == 0:
                stream.width, stream.height = frame.shape[1], frame.shape[0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def crop_around(image: np.ndarray, box, width: int, height: int, zoom: float = 1.0, face_y: float = 0.4):
    """A width x height picture of the face at ``box`` magnified ``zoom`` times, its centre in the middle and
    ``face_y`` of the way down (as far as the photo reaches)."""
    cw, ch = round(width / zoom), round(height / zoom)
    if cw > image.shape[1] or ch > image.shape[0]:
        raise ValueError(f"a {width}x{height} picture at zoom {zoom} needs more than the {image.shape[1]}x"
                         f"{image.shape[0]} photo")
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(cx - cw / 2), 0, image.shape[1] - cw))
    y0 = int(np.clip(round(cy - face_y * ch), 0, image.shape[0] - ch))
    return cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA if zoom < 1
                      else cv2.INTER_CUBIC)


def main(astronaut: str, hopper: str, models_dir: str, out: str) -> None:
    sys.path.insert(0, ROOT)
    from fantasyportrait_core.evaluation.clips import portrait_landmarks
    from fantasyportrait_core.faces.landmarks import landmark_box
    from fantasyportrait_core.motion.extraction import load_face_models

    models = load_face_models(detector=os.path.join(models_dir, "face_det.onnx"),
                              landmarks=os.path.join(models_dir, "face_landmark.onnx"))  # no motion encoder needed
    faces = lambda rgb: portrait_landmarks(rgb, models)  # noqa: E731 (every face's 222 landmarks, left to right)

    def read(path):
        rgb = np.ascontiguousarray(cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1])
        return rgb, landmark_box(faces(rgb)[0])

    def write(name, rgb):
        cv2.imwrite(os.path.join(out, name), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])

    (a, a_box), (g, g_box) = read(astronaut), read(hopper)
    # the faces at about the same size (about 160-240 px): Eileen Collins' is 108 px in her photo, Grace Hopper's 236 px
    portrait = crop_around(a, a_box, SIZE, SIZE, zoom=1.6)
    hopper_sq = crop_around(g, g_box, SIZE, SIZE)
    pair = np.concatenate([crop_around(a, a_box, 384, SIZE, zoom=1.5), crop_around(g, g_box, 384, SIZE, zoom=0.86)], 1)
    os.makedirs(out, exist_ok=True)
    write("portrait.jpg", portrait)
    write("two_people.jpg", pair)
    blinks_1, blinks_2 = (0.9, 2.6, 4.4, 5.6), (1.6, 3.3, 5.0)
    write_clip(os.path.join(out, "driver.mp4"), animate(hopper_sq, [Face(faces(hopper_sq)[0], 0.0, blinks_1)]))
    write_clip(os.path.join(out, "driver_2.mp4"), animate(portrait, [Face(faces(portrait)[0], 2.0, blinks_2)]))
    left, right = faces(pair)
    write_clip(os.path.join(out, "two_people_driver.mp4"),
               animate(pair, [Face(left, 2.0, blinks_2), Face(right, 0.0, blinks_1)]))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:4], sys.argv[4] if len(sys.argv) == 5 else os.path.join(ROOT, "examples"))
