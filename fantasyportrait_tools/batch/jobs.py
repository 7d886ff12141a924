"""The jobs file of ``fantasyportrait batch``: CSV or JSONL rows -> validated jobs (every bad row reported with its
line, before anything is queued), and each job's workflow with its inputs and overrides."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field

from fantasyportrait_core.errors import FantasyPortraitError
from fantasyportrait_core.sizing import MULTIPLE, RESOLUTIONS

from .. import SHIPPED, shipped_workflow
from ..workflow import apply_overrides, load_workflow, nodes_of_class


#: named columns -> (value type, [(node class, input)] the value goes to; the first class present wins)
NAMED = {
    "seed": (int, [("FantasyPortraitSampler", "seed"), ("FantasyPortraitLongVideo", "seed"), ("KSampler", "seed"),
                   ("RandomNoise", "noise_seed")]),
    "steps": (int, [("FantasyPortraitSampler", "steps"), ("FantasyPortraitLongVideo", "steps"), ("KSampler", "steps"),
                    ("BasicScheduler", "steps")]),
    "cfg": (float, [("FantasyPortraitSampler", "cfg"), ("FantasyPortraitLongVideo", "cfg"),
                    ("FantasyPortraitGuider", "cfg"), ("KSampler", "cfg")]),
    "portrait_cfg": (float, [("FantasyPortraitSampler", "portrait_cfg"), ("FantasyPortraitLongVideo", "portrait_cfg"),
                             ("FantasyPortraitGuider", "portrait_cfg")]),
    "strength": (float, [("FantasyPortraitSampler", "portrait_strength"),
                         ("FantasyPortraitLongVideo", "portrait_strength"), ("FantasyPortraitApply", "portrait_strength")]),
    "mapping": (str, [("FantasyPortraitMultiCombine", "mapping")]),
}
COLUMNS = {"image", "video", "videos", "workflow", "output", "prompt", "size", "set", *NAMED} | {
    f"video{i}" for i in range(2, 10)}
STATUSES = ("queued", "running", "done", "failed")


class JobsFileError(FantasyPortraitError):
    """Rows of the jobs file are wrong; the message lists every one."""


@dataclass
class Job:
    key: str                 # identifies the job's content: a changed row is a new job
    line: int
    image: str
    videos: list[str]
    workflow: str
    changes: list            # [node id, input, value]
    output: str              # file name inside the output folder
    seed: int | None = None
    status: str = "queued"
    server: str | None = None
    prompt_id: str | None = None
    start: float | None = None
    end: float | None = None
    error: str | None = None
    attempts: int = 0
    size: int | None = None
    sha256: str | None = None
    not_before: float = field(default=0.0, repr=False)
    step: str = field(default="", repr=False)
    run: int = field(default=0, repr=False)  # which launch of the job a worker's report is about

    @property
    def group(self) -> tuple:
        return tuple(self.videos)

    def record(self) -> dict:
        out = asdict(self)
        for k in ("not_before", "step", "run", "changes", "workflow", "image", "videos"):
            out.pop(k)
        return out


# --------------------------------------------------------------------------------------------
# the jobs file


def read_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) for every job of a CSV (header row) or JSONL file."""
    if not os.path.isfile(path):
        raise FantasyPortraitError(f"Jobs file not found: {path}")
    with open(path, encoding="utf-8-sig") as fh:
        text = fh.read()
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                rows.append((n, {"__error__": f"not valid JSON ({exc})"}))
                continue
            rows.append((n, row if isinstance(row, dict) else {"__error__": "not a JSON object"}))
        return rows
    reader = csv.DictReader(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    return [(lines[i + 1] if i + 1 < len(lines) else i + 2,
             {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k is not None})
            for i, row in enumerate(reader) if any((v or "").strip() for v in row.values() if isinstance(v, str))]


def _resolve(base: str, value: str) -> str:
    return value if os.path.isabs(os.path.expanduser(value)) else os.path.join(base, value)


def _workflow_path(value: str | None, videos: int, base: str) -> str:
    if not value:
        value = "single" if videos <= 1 else "people_from_videos"
    if value in SHIPPED:
        return shipped_workflow(value)
    return os.path.abspath(_resolve(base, value))


def _positive_prompt(wf: dict) -> str | None:
    """The CLIPTextEncode whose conditioning reaches the positive input of a Wan/sampler node."""
    for node in wf.values():
        link = node.get("inputs", {}).get("positive")
        if isinstance(link, list) and wf.get(link[0], {}).get("class_type") == "CLIPTextEncode":
            return link[0]
    texts = nodes_of_class(wf, "CLIPTextEncode")
    return texts[0] if texts else None


def _row_job(line: int, row: dict, base: str, workflows: dict) -> tuple[Job | None, list[str]]:
    errors = []
    if "__error__" in row:
        return None, [row["__error__"]]
    unknown = sorted(k for k in set(row) - COLUMNS if row[k] not in ("", None))
    if unknown:
        errors.append(f"unknown column(s) {', '.join(unknown)} (known: {', '.join(sorted(COLUMNS))})")
    image = str(row.get("image") or "")
    if not image:
        errors.append("no image")
    elif not os.path.isfile(_resolve(base, image)):
        errors.append(f"image not found: {_resolve(base, image)}")
    videos = row.get("videos") or []
    if isinstance(videos, str):
        videos = [v.strip() for v in videos.split(";") if v.strip()]
    videos = ([str(row["video"])] if row.get("video") else []) + list(videos) + [
        str(row[f"video{i}"]) for i in range(2, 10) if row.get(f"video{i}")]
    if not videos:
        errors.append("no driving video")
    videos = [_resolve(base, v) for v in videos]
    errors += [f"driving video not found: {v}" for v in videos if not os.path.isfile(v)]
    workflow = _workflow_path(row.get("workflow"), len(videos), base)
    if workflow not in workflows:
        try:
            workflows[workflow] = load_workflow(workflow)
        except FantasyPortraitError as exc:
            workflows[workflow] = exc
    wf = workflows[workflow]
    if isinstance(wf, Exception):
        return None, errors + [str(wf)]
    loaders = nodes_of_class(wf, "LoadVideo")
    if videos and len(videos) != len(loaders):
        errors.append(f"{len(videos)} driving video(s) given but {os.path.basename(workflow)} takes {len(loaders)}")
    changes, seed = [], None
    for name, (kind, targets) in NAMED.items():
        raw = row.get(name)
        if raw is None or raw == "":
            continue
        try:
            value = kind(raw) if kind is not int else int(str(raw), 10)
            if kind is float and not math.isfinite(value):
                raise ValueError
        except (TypeError, ValueError):
            errors.append(f"{name} {raw!r} is not {'an integer' if kind is int else 'a number' if kind is float else 'text'}")
            continue
        if name == "seed" and value < 0 or name == "steps" and value < 1:
            errors.append(f"{name} {raw!r} is out of range")
            continue
        target = next(((nid, inp) for cls, inp in targets for nid in nodes_of_class(wf, cls)[:1]), None)
        if target is None:
            errors.append(f"{name}: {os.path.basename(workflow)} has no {' or '.join(c for c, _ in targets)} node")
            continue
        changes.append([target[0], target[1], value])
        seed = value if name == "seed" else seed
    if row.get("prompt"):
        node = _positive_prompt(wf)
        if node is None:
            errors.append(f"prompt: {os.path.basename(workflow)} has no CLIPTextEncode node")
        else:
            changes.append([node, "text", str(row["prompt"])])
    size = str(row.get("size") or "").strip().lower()
    if size:
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        sizers = nodes_of_class(wf, "FantasyPortraitOutputSize")
        if size in RESOLUTIONS and sizers:
            changes.append([sizers[0], "resolution", size])
        elif match and all(int(side) and int(side) % MULTIPLE == 0 for side in match.groups()):
            for nid in nodes_of_class(wf, "WanImageToVideo", "FantasyPortraitMultiCombine", "FantasyPortraitLongVideo"):
                changes += [[nid, "width", int(match[1])], [nid, "height", int(match[2])]]
        else:
            errors.append(f"size {row['size']!r} must be 480p, 720p or WIDTHxHEIGHT in multiples of 16")
    sets = row.get("set") or []
    if isinstance(sets, str):
        sets = [s.strip() for s in sets.split(";") if s.strip()]
    try:
        applied = apply_overrides(wf, [str(s) for s in sets], label="set")
        for nid, node in applied.items():
            for k, v in node["inputs"].items():
                if wf[nid]["inputs"].get(k) != v:
                    changes.append([nid, k, v])
                    seed = v if k in ("seed", "noise_seed") and isinstance(v, int) else seed
    except FantasyPortraitError as exc:
        errors.append(str(exc))
    for nid, inp, value in changes:
        if inp not in wf[nid]["inputs"]:
            errors.append(f"{os.path.basename(workflow)} node {nid} ({wf[nid]['class_type']}) has no input {inp!r}")
    if seed is None:
        node = next((wf[n] for cls, inp in NAMED["seed"][1] for n in nodes_of_class(wf, cls)[:1]), None)
        seed = next((v for k, v in (node or {}).get("inputs", {}).items() if k in ("seed", "noise_seed")), None)
    output = str(row.get("output") or "")
    if not output:
        stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
        output = f"{line:04d}_{stem(image)}_{'+'.join(stem(v) for v in videos)}"
    if os.path.sep in output or (os.path.altsep and os.path.altsep in output) or output in (".", ".."):
        errors.append(f"output {output!r} must be a file name, not a path")
    if not os.path.splitext(output)[1]:
        output += ".mp4"
    if errors:
        return None, errors
    spec = json.dumps([os.path.abspath(_resolve(base, image)), videos, workflow, changes, output], sort_keys=True)
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return Job(key, line, os.path.abspath(_resolve(base, image)), videos, workflow, changes, output, seed), []


def load_jobs(path: str) -> tuple[list[Job], dict]:
    """Every job of the jobs file, or a :class:`JobsFileError` listing every bad row (line: reason)."""
    base = os.path.dirname(os.path.abspath(path))
    workflows, jobs, problems = {}, [], []
    rows = read_rows(path)
    if not rows:
        raise JobsFileError(f"{path} has no jobs.")
    for line, row in rows:
        job, errors = _row_job(line, row, base, workflows)
        problems += [f"line {line}: {e}" for e in errors]
        if job is not None:
            jobs.append(job)
    seen = {}
    for job in jobs:
        if job.output in seen:
            problems.append(f"line {job.line}: output {job.output} is also written by line {seen[job.output]}")
        seen.setdefault(job.output, job.line)
    if problems:
        raise JobsFileError(f"{path}: {len(problems)} problem(s); nothing was queued:\n  " + "\n  ".join(problems))
    return jobs, {k: v for k, v in workflows.items() if not isinstance(v, Exception)}


def job_workflow(job: Job, workflows: dict) -> dict:
    wf = json.loads(json.dumps(workflows[job.workflow]))
    for nid, inp, value in job.changes:
        wf[nid]["inputs"][inp] = value
    return wf
