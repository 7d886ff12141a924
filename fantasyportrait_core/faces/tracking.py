"""Multi-face tracking through a clip, with stable identities.

Per frame this runs the released ``CameraDemo`` rule for every face: each tracked face is
re-fitted from its previous (smoothed) landmarks, the detector runs again and every detection
is fitted from its box; candidates with landmark probability < 1e-4 or a landmark box smaller
than ``min_face`` are dropped, and of two candidates overlapping with IoU > 0.12 the smaller
goes (a fresh detection that wins starts a fresh smoother, as released). On top of that rule,
which only keeps faces, this module keeps *identities*: a surviving detection inherits the id of
the track whose face it overlaps, a face lost for a few frames is re-attached when it is found
again near where it was, and the ids are numbered left to right at the frame where each person
first appears. Frames where a person is missed are filled from the neighbouring frames and
reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import FantasyPortraitError
from .detector import FaceDetector
from .frames import check_frame
from .landmarks import FACE_PROB_THRESHOLD, LMK_COUNT, LandmarkModel, LandmarkResult, landmark_box
from .smoothing import LandmarkSmoother

DEFAULT_MIN_FACE = 96  # released: faces whose landmark box is smaller are dropped
OVERLAP_IOU = 0.12
REATTACH_IOU = 0.3


@dataclass
class FaceTracks:
    """Per-person results for a clip of F frames (P persons, numbered left to right)."""

    boxes: np.ndarray      # [P, F, 4] landmark boxes x0, y0, x1, y1 (filled where missed)
    landmarks: np.ndarray  # [P, F, 222, 2] (filled where missed)
    valid: np.ndarray      # [P, F] bool: True where the face was actually found
    frame_size: tuple[int, int]  # (H, W)
    notes: list[str] = field(default_factory=list)

    @property
    def num_persons(self) -> int:
        return self.boxes.shape[0]

    @property
    def num_frames(self) -> int:
        return self.boxes.shape[1]

    def select(self, persons: list[int]) -> "FaceTracks":
        return FaceTracks(self.boxes[persons], self.landmarks[persons], self.valid[persons], self.frame_size,
                          list(self.notes))


@dataclass
class _Candidate:
    points: np.ndarray
    box: np.ndarray
    euler: np.ndarray
    prob: float
    smoother: LandmarkSmoother
    face_dis: float
    track: int | None  # index of the track it continues, None for a fresh detection
    dropped: bool = False


@dataclass
class _Track:
    first_frame: int
    frames: dict = field(default_factory=dict)  # frame -> (points, box)
    last_points: np.ndarray | None = None      # None once lost (no landmark seed)
    last_box: np.ndarray | None = None
    smoother: LandmarkSmoother | None = None
    face_dis: float = 0.0
    missed: int = 0


def _fit(candidate: _Candidate, result, min_face: float) -> None:
    """Apply the released per-face bookkeeping to a fitted candidate."""
    if result.prob < FACE_PROB_THRESHOLD:
        candidate.dropped = True
        return
    points = candidate.smoother(result.points, candidate.face_dis)
    box = landmark_box(points)
    candidate.points, candidate.box, candidate.euler, candidate.prob = points, box, result.euler, result.prob
    pitch, yaw = np.rad2deg(result.euler[0]), np.rad2deg(result.euler[1])
    candidate.face_dis = np.linalg.norm(points[0] - points[32]) * (1.0 + (abs(pitch) + abs(yaw) * 0.6) / 18.0)
    if box[2] - box[0] < min_face or box[3] - box[1] < min_face:
        candidate.dropped = True


def _overlap_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = abs(iw * ih)
    if inter == 0:
        return 0.0
    area = lambda r: abs((r[2] - r[0]) * (r[3] - r[1]))
    return inter / float(area(a) + area(b) - inter)


def _resolve_overlaps(cands: list[_Candidate]) -> None:
    """Released rule: of two overlapping faces (IoU > 0.12) the smaller is dropped."""
    alive = [i for i, c in enumerate(cands) if not c.dropped]
    dropped = set()
    for i in alive:
        if i in dropped:
            continue
        for j in alive:
            if j == i or j in dropped:
                continue
            if _overlap_iou(cands[i].box, cands[j].box) > OVERLAP_IOU:
                area_i = np.prod(cands[i].box[2:] - cands[i].box[:2])
                area_j = np.prod(cands[j].box[2:] - cands[j].box[:2])
                dropped.add(i if area_i - area_j < 0 else j)
    for k in dropped:
        cands[k].dropped = True


def track_faces(frames, detector: FaceDetector, landmarker: LandmarkModel, min_face: float = DEFAULT_MIN_FACE,
                max_gap: int = 30, progress: Callable[[int, int], None] | None = None,
                source: str = "the driving clip", two_pass: bool = True) -> FaceTracks:
    """Track every face through ``frames``: RGB uint8 ``[F, H, W, 3]``, or any sequence of frames
    (e.g. a lazily decoded :class:`~..video.DrivingFrames`, iterated once per pass).

    ``two_pass`` (default, released): a first pass finds the faces; the second, whose landmarks are
    returned, starts frame 0 from the first pass's landmark boxes instead of fresh detections
    (the released ``det_landmarks``). The second pass reuses the first pass's detections and the
    landmarks fitted from them (the same calls on the same frame give the same numbers), so it
    only re-fits the tracked faces. Progress counts both passes.
    """
    if not two_pass:
        return _track(frames, detector, landmarker, min_face, max_gap, progress, source)
    total, memo = 2 * len(frames), {}
    first = _track(frames, detector, landmarker, min_face, max_gap,
                   (lambda d, t: progress(d, total)) if progress else None, source, memo=memo)
    seeds = first.boxes[first.valid[:, 0], 0]
    return _track(frames, detector, landmarker, min_face, max_gap,
                  (lambda d, t: progress(len(frames) + d, total)) if progress else None, source,
                  seed_boxes=seeds if len(seeds) else None, memo=memo)


def _track(frames, detector, landmarker, min_face, max_gap, progress, source, seed_boxes=None,
           memo: dict | None = None) -> FaceTracks:
    """One tracking pass. ``memo`` keeps, per frame, the detections and the landmarks fitted from
    each detected box, so a second pass over the same frames does not compute them again."""
    if len(frames) == 0:
        raise FantasyPortraitError(f"{source} has no frames.")
    tracks: list[_Track] = []
    total, frame_hw = len(frames), None
    memo = {} if memo is None else memo
    for f, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame_hw is None:
            check_frame(frame, f"first frame of {source}")
            frame_hw = frame.shape[:2]
        cands: list[_Candidate] = []
        for t, track in enumerate(tracks):
            if track.last_points is None:
                continue
            cand = _Candidate(None, None, None, 0.0, track.smoother, track.face_dis, t)
            _fit(cand, landmarker.refine(frame, points=track.last_points), min_face)
            cands.append(cand)
        if f == 0 and seed_boxes is not None:
            boxes = seed_boxes  # the released second pass starts from the first pass's boxes
        else:
            if ("det", f) not in memo:
                memo["det", f] = detector.detect(frame)[0]
            boxes = memo["det", f]
        for box in boxes:
            diag = float(np.sqrt(np.square(box[2] - box[0]) + np.square(box[3] - box[1])))
            cand = _Candidate(None, None, None, 0.0, LandmarkSmoother(), diag, None)
            key = ("box", f, np.asarray(box).tobytes())
            if key not in memo:
                memo[key] = landmarker.refine(frame, box=box)
            result = memo[key]
            _fit(cand, LandmarkResult(result.points.copy(), result.euler, result.prob), min_face)
            cands.append(cand)
        _resolve_overlaps(cands)

        continued = set()
        survivors = [c for c in cands if not c.dropped]
        for c in survivors:
            if c.track is not None:
                continued.add(c.track)
        # fresh detections: inherit the id of the track whose face they overlap, or of a lost one
        reference = {}
        for t, track in enumerate(tracks):
            if t in continued or track.missed > max_gap or track.last_box is None:
                continue
            seen = [c.box for c in cands if c.track == t and c.box is not None]
            reference[t] = seen[0] if seen else track.last_box
        fresh = [c for c in survivors if c.track is None]
        pairs = sorted(((_overlap_iou(c.box, ref), i, t) for i, c in enumerate(fresh) for t, ref in reference.items()),
                       reverse=True)
        taken_c, taken_t = set(), set()
        for iou, i, t in pairs:
            if iou <= REATTACH_IOU and not (iou > OVERLAP_IOU and t in {c.track for c in cands if c.dropped}):
                continue
            if i in taken_c or t in taken_t:
                continue
            fresh[i].track = t
            taken_c.add(i)
            taken_t.add(t)
        for c in survivors:
            if c.track is None:
                tracks.append(_Track(first_frame=f))
                c.track = len(tracks) - 1
            track = tracks[c.track]
            track.frames[f] = (c.points.astype(np.float32), c.box)
            track.last_points, track.last_box = c.points, c.box
            track.smoother, track.face_dis, track.missed = c.smoother, c.face_dis, 0
        alive = {c.track for c in survivors}
        for t, track in enumerate(tracks):
            if t not in alive:
                track.last_points = None  # the released tracker forgets a lost face's landmarks
                track.missed += 1
        if progress is not None:
            progress(f + 1, total)

    if not tracks:
        raise FantasyPortraitError(
            f"No face was found in any of the {total} frames of {source}. Use a clip where the face is "
            f"visible, frontal enough and at least {min_face:g} pixels tall (or lower min_face).")
    return _assemble(tracks, total, frame_hw)


def _fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over missed frames; the ends copy the nearest found frame."""
    idx = np.flatnonzero(valid)
    out = values.copy()
    flat = values.reshape(len(values), -1)
    filled = np.stack([np.interp(np.arange(len(values)), idx, flat[idx, k]) for k in range(flat.shape[1])], 1)
    out[~valid] = filled.reshape(values.shape)[~valid]
    return out


def _assemble(tracks: list[_Track], num_frames: int, frame_hw) -> FaceTracks:
    def first_x(track):
        pts, box = track.frames[track.first_frame]
        return (box[0] + box[2]) / 2

    order = sorted(range(len(tracks)), key=lambda t: first_x(tracks[t]))
    persons = len(order)
    boxes = np.zeros((persons, num_frames, 4), np.float32)
    lmks = np.zeros((persons, num_frames, LMK_COUNT, 2), np.float32)
    valid = np.zeros((persons, num_frames), bool)
    notes = []
    for p, t in enumerate(order):
        for f, (pts, box) in tracks[t].frames.items():
            boxes[p, f], lmks[p, f], valid[p, f] = box, pts, True
        if not valid[p].all():
            missed = np.flatnonzero(~valid[p])
            boxes[p] = _fill(boxes[p], valid[p])
            lmks[p] = _fill(lmks[p], valid[p])
            notes.append(f"person {p}: not found in {len(missed)} of {num_frames} frames "
                         f"({_ranges(missed)}); filled from neighbouring frames")
    return FaceTracks(boxes, lmks, valid, tuple(int(v) for v in frame_hw), notes)


def _ranges(frames: np.ndarray) -> str:
    parts, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            parts.append(f"{start}" if start == f else f"{start}-{f}")
            start = None
    text = ", ".join(parts[:6])
    return "frames " + text + (", ..." if len(parts) > 6 else "")


def keep_persons(tracks: FaceTracks, count: int) -> FaceTracks:
    """Keep the ``count`` persons found in most frames (still numbered left to right)."""
    if count <= 0 or count >= tracks.num_persons:
        if count > tracks.num_persons:
            raise FantasyPortraitError(
                f"{count} persons were asked for but only {tracks.num_persons} were found in the clip.")
        return tracks
    best = sorted(np.argsort(-tracks.valid.sum(1), kind="stable")[:count].tolist())
    return tracks.select(best)


def largest_person(tracks: FaceTracks) -> tuple[int, list[str]]:
    """The person the released single-person rule drives with: the largest face (landmark-box area).

    Per frame the largest found face is looked up; the person who is largest in most frames is chosen
    (a tie goes to the larger mean area). Returns that person and notes on ties and on frames where
    another person's face is larger (a switch the released per-frame rule would have made)."""
    area = (tracks.boxes[..., 2] - tracks.boxes[..., 0]) * (tracks.boxes[..., 3] - tracks.boxes[..., 1])
    area = np.where(tracks.valid, area, -1.0)  # [P, F]
    seen = tracks.valid.any(0)
    per_frame = area.argmax(0)[seen]
    counts = np.bincount(per_frame, minlength=tracks.num_persons)
    mean_area = np.where(tracks.valid, area, 0).sum(1) / np.maximum(tracks.valid.sum(1), 1)
    leaders = np.flatnonzero(counts == counts.max())
    chosen = int(leaders[np.argmax(mean_area[leaders])])
    notes = []
    if len(leaders) > 1:
        notes.append(f"persons {', '.join(map(str, leaders.tolist()))} have the largest face in equally many frames; "
                     f"person {chosen} (larger on average) drives")
    others = np.flatnonzero(seen)[per_frame != chosen]
    if len(others):
        notes.append(f"the largest face is another person's in {len(others)} of {int(seen.sum())} frames "
                     f"({_ranges(others)}); person {chosen} drives throughout (the released rule would switch there)")
    return chosen, notes
