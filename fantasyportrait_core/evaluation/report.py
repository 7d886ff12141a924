"""The motion check's report: which output face goes with which driver, the per-person numbers, the leakage matrix,
the reference and identity scores, as one JSON-ready dict and a short text."""

from __future__ import annotations

import math

import numpy as np

from ..branch.multi import parse_mapping
from ..errors import FantasyPortraitError
from ..motion.extraction import ExpressionFeatures
from .motion import compare_face, leakage_matrix
from .reference import lmd

MIN_FRAMES = 5  # fewer frames in common carry no motion to compare


def _tracks_of(clip: ExpressionFeatures, what: str):
    if clip.tracks is None:
        raise FantasyPortraitError(f"{what} has no face tracks (features made without the Face Tracker): the motion "
                                   "check needs the landmarks too; use the Expression Extractor's output.")
    return clip.tracks


def driver_persons(drivers: list[ExpressionFeatures], names: list[str], faces: int, mapping: str = ""):
    """The driver of each output face, left to right: ``(features [F, 554], landmarks [F, 222, 2], label)``. The
    drivers' persons are taken in order (each clip's left to right); ``mapping`` ('2,1') says which drives which
    face, as in Multi-Portrait Combine. One output face and several driver persons: the largest face drives, as
    FantasyPortrait Encode does by default."""
    persons, notes = [], []
    for clip, name in zip(drivers, names):
        tracks = _tracks_of(clip, name)
        for p in range(tracks.num_persons):
            persons.append((clip.features[p].float().cpu().numpy(), tracks.landmarks[p].astype(np.float64),
                            f"{name} person {p + 1}" if tracks.num_persons > 1 else name,
                            float(np.prod(tracks.boxes[p, :, 2:] - tracks.boxes[p, :, :2], -1).mean())))
    if faces == 1 and len(persons) > 1 and not mapping.strip():
        largest = max(range(len(persons)), key=lambda k: persons[k][3])
        notes.append(f"the output has one face and the drivers {len(persons)} persons: the largest "
                     f"({persons[largest][2]}) is taken as its driver, as FantasyPortrait Encode does by default")
        persons = [persons[largest]]
    if len(persons) != faces:
        raise FantasyPortraitError(
            f"The output has {faces} face(s) but the driver(s) have {len(persons)} person(s) "
            f"({', '.join(p[2] for p in persons) or 'none'}): give one driver person per output face (a clip per "
            "person, or one clip with all of them), or check the output for a face that should not be there.")
    order = parse_mapping(mapping, faces)
    return [persons[k][:3] for k in order], notes


def evaluate(output: ExpressionFeatures, drivers: list[ExpressionFeatures], driver_names: list[str],
             mapping: str = "", reference: ExpressionFeatures | None = None, max_offset: int | None = None) -> dict:
    """The report of one output (its faces' features and tracks) against its drivers (already at the output's frame
    rate, frame 0 with frame 0). ``reference``: the ground-truth clip of a self-reenactment."""
    out_tracks = _tracks_of(output, "the output")
    faces = out_tracks.num_persons
    matched, notes = driver_persons(drivers, driver_names, faces, mapping)
    n = min([output.features.shape[1]] + [len(f) for f, _, _ in matched])
    if n < MIN_FRAMES:
        raise FantasyPortraitError(
            f"The output ({output.features.shape[1]} frames) and its driver(s) "
            f"({', '.join(f'{len(f)} frames' for f, _, _ in matched)}) have {max(n, 0)} frame(s) in common at the "
            f"output's frame rate; at least {MIN_FRAMES} are needed: check the clips and --driver-start.")
    max_offset = min(15, n // 3) if max_offset is None else max_offset
    out_feats = [output.features[i].float().cpu().numpy() for i in range(faces)]
    out_lmks = [out_tracks.landmarks[i].astype(np.float64) for i in range(faces)]
    persons = []
    for i, (feat, lmk, label) in enumerate(matched):
        person = {"face": i + 1, "driver": label,
                  **compare_face(out_feats[i][:n], out_lmks[i][:n], feat, lmk, max_offset)}
        persons.append(person)
    leak = leakage_matrix([f[:n] for f in out_feats], [f[:n] for f, _, _ in matched])
    report = {"frames": int(output.features.shape[1]), "fps": output.fps, "faces": faces, "compared_frames": int(n),
              "max_offset": int(max_offset), "persons": persons, "leakage": leak.tolist(), "notes": notes}
    if reference is not None:
        ref_tracks = _tracks_of(reference, "the reference clip")
        if ref_tracks.num_persons != faces:
            raise FantasyPortraitError(f"The reference clip has {ref_tracks.num_persons} face(s) and the output {faces}: "
                                       "a self-reenactment reference shows the same people as the output.")
        (oh, ow), (rh, rw) = out_tracks.frame_size, ref_tracks.frame_size
        scale = np.array([ow / rw, oh / rh])  # a reference of another size: its landmarks in the output's pixels
        for i, person in enumerate(persons):
            person["lmd"] = lmd(out_lmks[i][:n], ref_tracks.landmarks[i][:n].astype(np.float64) * scale)
    return clean(report)


def clean(value):
    """JSON-ready: nan and infinity become None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value, fmt="{:.3g}") -> str:
    return "n/a" if value is None else fmt.format(value)


def summary(report: dict) -> str:
    """The report as a few readable lines (what the node shows and the command prints)."""
    lines = [f"FantasyPortrait motion check: {report['frames']} output frames"
             + (f" at {report['fps']:g} fps" if report.get("fps") else "")
             + f", {report['faces']} face(s), compared over {report['compared_frames']} frames"]
    for p in report["persons"]:
        still = p["still"]
        lines.append(f"face {p['face']} <- {p['driver']}:")
        lines.append("  " + "   ".join(f"{k.replace('_', ' ')} {_num(p[k])} (still face {_num(still[k])})"
                                       for k in ("head_pose_error", "eye_error", "expression_error")))
        lines.append(f"  mouth open corr {_num(p['mouth_open_corr'], '{:.2f}')}   motion corr "
                     f"{_num(p['motion_corr'], '{:.2f}')}   jitter {_num(p['jitter'], '{:.2f}')} % of face size "
                     f"(driver {_num(p['jitter_driver'], '{:.2f}')} %)   best offset {p['offset']} frames"
                     + (f"   lmd {_num(p['lmd'], '{:.4f}')}" if "lmd" in p else "")
                     + (f"   identity {_num(p['identity'], '{:.3f}')}" if p.get("identity") is not None else ""))
    lines.append("leakage (motion corr; rows: output faces, columns: their drivers; high on the diagonal only):")
    lines += ["  " + "  ".join(_num(v, "{:5.2f}") for v in row) for row in report["leakage"]]
    if report.get("reference"):
        r = report["reference"]
        lines.append(f"reference: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} over {r['frames']} frames")
    if "identity" in report:
        ident = report["identity"]
        lines.append(f"identity: {ident['absent']}" if ident.get("absent") else
                     f"identity (ArcFace {ident['model']}): " + ", ".join(
                         f"face {p['face']} {_num(p.get('identity'))}" for p in report["persons"]))
    lines += [f"note: {n}" for n in report.get("notes", [])]
    if report.get("seconds") is not None:
        lines.append(f"took {report['seconds']:.1f} s ({report['seconds_per_frame']:.3f} s per output frame)")
    return "\n".join(lines)
