"""Headless batch runs over one or many ComfyUI servers (``fantasyportrait batch``).

A tool on top of :mod:`.runner`: every ComfyUI server is a worker with its own queue and this module
is their client. It reads a jobs file (CSV or JSONL), validates every row before anything is queued,
gives each server at most ``per_server`` jobs at a time (jobs that share driving clips go to the same
server back to back, so ComfyUI's node cache skips re-extracting their motion), and records every
state change in a JSONL manifest (rewritten atomically), so a second run resumes where the first
stopped. A job whose server disappears goes to another server; a job that fails on its inputs is
recorded as failed and not retried; transient errors are retried with backoff.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..errors import FantasyPortraitError
from ..sizing import MULTIPLE, RESOLUTIONS
from . import PACK_DIR, file_sha256
from .runner import (ComfyClient, RunError, ServerUnreachable, apply_overrides, check_workflow, download_result,
                     fill_inputs, load_workflow, nodes_of_class, run_workflow)

SHIPPED = {"single": "fantasyportrait_single", "two_from_one_video": "fantasyportrait_two_from_one_video",
           "people_from_videos": "fantasyportrait_people_from_videos"}
WORKFLOW_DIR = os.path.join(PACK_DIR, "workflows", "api")

#: named columns -> (value type, [(node class, input)] the value goes to; the first class present wins)
NAMED = {
    "seed": (int, [("FantasyPortraitSampler", "seed"), ("KSampler", "seed"), ("RandomNoise", "noise_seed")]),
    "steps": (int, [("FantasyPortraitSampler", "steps"), ("KSampler", "steps"), ("BasicScheduler", "steps")]),
    "cfg": (float, [("FantasyPortraitSampler", "cfg"), ("FantasyPortraitGuider", "cfg"), ("KSampler", "cfg")]),
    "portrait_cfg": (float, [("FantasyPortraitSampler", "portrait_cfg"), ("FantasyPortraitGuider", "portrait_cfg")]),
    "strength": (float, [("FantasyPortraitSampler", "portrait_strength"), ("FantasyPortraitApply", "portrait_strength")]),
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
        return os.path.join(WORKFLOW_DIR, f"{SHIPPED[value]}_api.json")
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
            for nid in nodes_of_class(wf, "WanImageToVideo", "FantasyPortraitMultiCombine"):
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


# --------------------------------------------------------------------------------------------
# the manifest


def write_manifest(path: str, jobs: list[Job]) -> None:
    """All jobs, one JSON object per line, replaced atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for job in jobs:
            fh.write(json.dumps(job.record()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                out[rec["key"]] = rec
            except (ValueError, KeyError):
                continue
    return out


def resume(jobs: list[Job], manifest: dict, out_dir: str) -> int:
    """Mark jobs done when the manifest says so and their output is there, unchanged; returns how many."""
    skipped = 0
    for job in jobs:
        rec = manifest.get(job.key)
        path = os.path.join(out_dir, job.output)
        if rec and rec.get("status") == "done" and os.path.isfile(path) and os.path.getsize(path) == rec.get("size") \
                and file_sha256(path) == rec.get("sha256"):
            for k in ("status", "server", "prompt_id", "seed", "start", "end", "size", "sha256", "attempts"):
                setattr(job, k, rec.get(k))
            skipped += 1
    return skipped


# --------------------------------------------------------------------------------------------
# servers


def _environment(variable: str, header: str) -> str:
    if variable not in os.environ:
        raise FantasyPortraitError(f"Header {header!r} reads ${{{variable}}}, but the environment variable "
                                   f"{variable} is not set: export it before running the batch.")
    return os.environ[variable]


def parse_servers(urls: list[str], servers_file: str | None, headers: list[str]) -> list[tuple[str, dict]]:
    """(url, headers) per server: ``--server`` URLs with the ``--header`` lines, and the lines of a servers
    file (``URL`` then optional ``| Name: value`` parts; ``${VAR}`` reads an environment variable)."""
    def header_dict(parts):
        out = {}
        for part in parts:
            name, colon, value = part.partition(":")
            if not colon or not name.strip():  # name only the first word: the rest may be a secret
                first = (part.split() or ["(empty)"])[0]
                raise FantasyPortraitError(f"A header starting {first!r} is not written 'Name: value'.")
            out[name.strip()] = re.sub(r"\$\{(\w+)\}", lambda m: _environment(m[1], name.strip()), value.strip())
        return out

    common = header_dict(headers)
    servers = [(u, dict(common)) for u in urls]
    if servers_file:
        if not os.path.isfile(servers_file):
            raise FantasyPortraitError(f"Servers file not found: {servers_file}")
        with open(servers_file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    url, *parts = [p.strip() for p in line.split("|")]
                    servers.append((url, {**common, **header_dict(parts)}))
    return servers


class Server:
    def __init__(self, url: str, headers: dict, slots: int):
        self.client = ComfyClient(url, timeout=60, headers=headers)
        # probing a lost server must not hold up the batch's event loop for the full request timeout
        self.prober = ComfyClient(url, timeout=5, headers=headers)
        self.url, self.slots = self.client.base, slots
        self.alive, self.in_flight, self.group = True, 0, None
        self.checked = 0.0
        self.uploaded: dict = {}
        self.prompts: dict = {}  # prompt id -> job key, for this batch's prompts on this server

    def probe(self) -> bool:
        self.checked = time.monotonic()
        try:
            self.prober.get_json("/system_stats")
            if not self.alive:
                self.uploaded.clear()  # a restarted server may have lost its input folder
            self.alive = True
        except RunError:
            self.alive = False
        return self.alive


# --------------------------------------------------------------------------------------------
# the run


class Batch:
    def __init__(self, jobs: list[Job], workflows: dict, servers: list[Server], out_dir: str, manifest: str,
                 retries: int = 3, timeout: float | None = None, say: Callable[[str], None] = print,
                 status_line: Callable[[str], None] | None = None, cancel_running: bool = False):
        self.jobs, self.workflows, self.servers = jobs, workflows, servers
        self.out_dir, self.manifest, self.retries, self.timeout = out_dir, manifest, retries, timeout
        self.say, self.status_line = say, status_line or (lambda s: None)
        self.cancel_running = cancel_running
        self.events: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.digests: dict = {}
        self.durations: list[float] = []
        self.workers: list[threading.Thread] = []

    # --- scheduling -------------------------------------------------------------------------
    def pick(self, server: Server) -> Job | None:
        now = time.time()
        waiting = [j for j in self.jobs if j.status == "queued" and j.not_before <= now]
        if not waiting:
            return None
        same = [j for j in waiting if j.group == server.group]
        if same:
            return same[0]
        busy = {s.group for s in self.servers if s is not server and s.alive}
        fresh = [j for j in waiting if j.group not in busy]
        if fresh:
            job = fresh[0]
        else:  # every waiting job's clip is another server's: help only where at least two of them wait
            counts = {}
            for j in waiting:
                counts[j.group] = counts.get(j.group, 0) + 1
            shared = [j for j in waiting if counts[j.group] >= 2]
            if not shared:
                return None
            job = [j for j in shared if j.group == shared[0].group][-1]  # from the end: the owner keeps its run
        server.group = job.group
        return job

    def run(self) -> bool:
        os.makedirs(os.path.dirname(self.manifest), exist_ok=True)  # --manifest may name a folder of its own
        write_manifest(self.manifest, self.jobs)
        try:
            while any(j.status in ("queued", "running") for j in self.jobs):
                for server in self.servers:
                    if not server.alive and time.monotonic() - server.checked > 5:
                        if server.probe():
                            self.say(f"{server.url} answers again")
                    while server.alive and server.in_flight < server.slots:
                        job = self.pick(server)
                        if job is None:
                            break
                        self.launch(server, job)
                if not any(s.alive for s in self.servers) and not any(j.status == "running" for j in self.jobs):
                    self.wait_for_a_server()
                try:
                    event = self.events.get(timeout=0.5)
                except queue.Empty:
                    event = None
                while event is not None:
                    self.handle(*event)
                    try:
                        event = self.events.get_nowait()
                    except queue.Empty:
                        event = None
                self.status_line(self.progress_text())
        except KeyboardInterrupt:
            self.stop()
            return False
        return all(j.status == "done" for j in self.jobs)

    def wait_for_a_server(self, limit: float = 300.0) -> None:
        self.say(f"no server answers; trying again for up to {limit:.0f} s")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(2)
            if any(s.probe() for s in self.servers):
                return
        for job in self.jobs:
            if job.status == "queued":
                job.status, job.error = "failed", "no server could be reached"
        write_manifest(self.manifest, self.jobs)

    def launch(self, server: Server, job: Job) -> None:
        server.in_flight += 1
        job.status, job.server, job.start, job.end, job.error, job.step = "running", server.url, time.time(), None, None, ""
        job.prompt_id = None
        job.attempts += 1
        job.run += 1
        write_manifest(self.manifest, self.jobs)
        worker = threading.Thread(target=self.work, args=(server, job, job.run), daemon=True)
        self.workers.append(worker)
        worker.start()

    def work(self, server: Server, job: Job, run: int) -> None:
        put = lambda kind, info: self.events.put((kind, server, job, run, info))  # noqa: E731
        try:
            names = [self.upload(server, path) for path in [job.image, *job.videos]]
            wf = fill_inputs(job_workflow(job, self.workflows), names[0], names[1:])

            def queued(prompt_id):
                server.prompts[prompt_id] = job.key  # registered before anything can stop the batch's cleanup
                put("queued", prompt_id)

            entry = run_workflow(server.client, wf, lambda text: put("step", text), timeout=self.timeout,
                                 on_queued=queued, stop=self.stopping.is_set)
            data = download_result(server.client, entry)
            path = os.path.join(self.out_dir, job.output)
            tmp = f"{path}.part"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            put("done", (len(data), hashlib.sha256(data).hexdigest()))
        except ServerUnreachable as exc:
            put("lost", str(exc))
        except RunError as exc:
            put("retry" if exc.transient else "failed", str(exc))
        except FantasyPortraitError as exc:
            put("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker must report, never vanish
            put("retry", f"{type(exc).__name__}: {exc}")

    def upload(self, server: Server, path: str) -> str:
        """Upload once per server under a content-derived name (same clip, same name: ComfyUI's cache
        then skips the nodes that only depend on it)."""
        if path not in self.digests:
            self.digests[path] = file_sha256(path)[:12]
        name = f"fp_{self.digests[path]}_{os.path.basename(path)}"
        if path not in server.uploaded:
            server.uploaded[path] = server.client.upload(path, name)
        return server.uploaded[path]

    def handle(self, kind: str, server: Server, job: Job, run: int, info) -> None:
        if job.status != "running" or job.run != run:
            return  # a late report about an earlier launch of the job
        if kind == "queued":
            job.prompt_id = info
        elif kind == "step":
            job.step = info
            return
        else:
            server.in_flight -= 1
            server.prompts.pop(job.prompt_id, None)
            job.end = time.time()
            if kind == "done":
                job.status, job.size, job.sha256, job.error = "done", info[0], info[1], None
                self.durations.append(job.end - job.start)
                self.say(f"done   line {job.line}: {job.output} ({server.url}, {job.end - job.start:.1f} s)")
            elif kind == "failed":
                job.status, job.error = "failed", info
                self.say(f"failed line {job.line}: {info}")
            elif kind == "lost":
                server.alive, server.checked, server.group = False, time.monotonic(), None
                job.status, job.error, job.server = "queued", info, None
                job.attempts -= 1  # not the job's fault
                self.say(f"lost   {server.url}: {info}; line {job.line} goes to another server")
            elif kind == "retry":
                if job.attempts > self.retries:
                    job.status, job.error = "failed", f"{info} (after {job.attempts} attempts)"
                    self.say(f"failed line {job.line}: {job.error}")
                else:
                    delay = min(60.0, 2.0 ** job.attempts)
                    job.status, job.error, job.not_before = "queued", info, time.time() + delay
                    self.say(f"retry  line {job.line} in {delay:.0f} s: {info}")
        write_manifest(self.manifest, self.jobs)

    # --- control ----------------------------------------------------------------------------
    def progress_text(self) -> str:
        count = {s: sum(j.status == s for j in self.jobs) for s in STATUSES}
        elapsed = time.monotonic() - self.started
        left = count["queued"] + count["running"]
        eta = ""
        if self.durations and left:
            per = sum(self.durations) / len(self.durations) / max(1, sum(s.slots for s in self.servers if s.alive))
            eta = f", ~{_clock(per * left)} left"
        steps = "; ".join(f"line {j.line}: {j.step}" for j in self.jobs if j.status == "running" and j.step)
        return (f"{count['done']}/{len(self.jobs)} done, {count['failed']} failed, {count['running']} running, "
                f"{count['queued']} waiting, {_clock(elapsed)} elapsed{eta}" + (f" | {steps}" if steps else ""))

    def stop(self) -> None:
        """Ctrl-C: queue nothing more, take this batch's waiting prompts off every server's queue (and
        interrupt the running ones with ``cancel_running``), and leave the manifest consistent."""
        self.stopping.set()
        for worker in self.workers:  # they notice within a second or two, after registering any prompt
            worker.join(timeout=10)
        for server in self.servers:
            ours = set(server.prompts)
            if not ours:
                continue
            try:
                listing = server.client.get_json("/queue")
                pending = [item[1] for item in listing.get("queue_pending", []) if item[1] in ours]
                running = [item[1] for item in listing.get("queue_running", []) if item[1] in ours]
                if pending:
                    server.client.post_json("/queue", {"delete": pending})
                for prompt_id in running if self.cancel_running else []:
                    server.client.post_json("/interrupt", {"prompt_id": prompt_id})
                kept = "" if self.cancel_running or not running else f"; {len(running)} running prompt(s) left to finish"
                self.say(f"stopped: removed {len(pending)} waiting prompt(s) from {server.url}{kept}")
            except RunError as exc:
                self.say(f"could not clean up {server.url}: {exc}")
        for job in self.jobs:
            if job.status == "running":
                job.status, job.error, job.server = "queued", "stopped by the user before it finished", None
        write_manifest(self.manifest, self.jobs)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def summary(jobs: list[Job]) -> str:
    rows = [("line", "status", "output", "server", "seconds", "error")]
    for job in jobs:
        took = f"{job.end - job.start:.1f}" if job.start and job.end and job.status == "done" else ""
        rows.append((str(job.line), job.status, job.output, job.server or "", took, (job.error or "")[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def check_servers(jobs: list[Job], workflows: dict, servers: list[Server],
                  say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> None:
    """Before queueing: every workflow (with its jobs' changes) can run on every reachable server."""
    reachable = [s for s in servers if s.probe()]
    if not reachable:
        raise ServerUnreachable("No server could be reached: " + ", ".join(s.url for s in servers) + ". Check "
                                "that ComfyUI runs there (and listens beyond localhost: --listen), the addresses "
                                "given with --server or --servers-file, and any --header it needs.")
    for server in servers:
        if not server.alive:
            say(f"{server.url} does not answer; it is tried again during the batch")
    problems = []
    for server in reachable:
        info = server.client.get_json("/object_info")
        checked = set()
        for job in jobs:
            wf = job_workflow(job, workflows)
            sig = json.dumps(wf, sort_keys=True)
            if sig in checked:
                continue
            checked.add(sig)
            try:
                check_workflow(wf, info)
            except RunError as exc:
                problems.append(f"line {job.line} on {server.url}: {exc}")
    if problems:
        raise JobsFileError(f"{len(problems)} problem(s) on the servers; nothing was queued:\n  "
                            + "\n  ".join(problems))


def run_batch(jobs_file: str, server_specs: list[tuple[str, dict]], out_dir: str | None = None,
              manifest: str | None = None, per_server: int = 1, retries: int = 3, timeout: float | None = None,
              dry_run: bool = False, cancel_running: bool = False, say: Callable[[str], None] | None = None,
              status_line: Callable[[str], None] | None = None, loaded: tuple | None = None) -> int:
    """The whole ``fantasyportrait batch`` command; returns the exit status (0 only when every job is done).
    ``loaded``: what :func:`load_jobs` already made of ``jobs_file`` (then it is not read again)."""
    say = say or (lambda s: print(s, file=sys.stderr))
    if per_server < 1:
        raise FantasyPortraitError("--per-server must be at least 1.")
    jobs, workflows = loaded or load_jobs(jobs_file)
    base = os.path.dirname(os.path.abspath(jobs_file))
    out_dir = os.path.abspath(out_dir or os.path.join(base, "outputs"))
    manifest = os.path.abspath(manifest or os.path.join(out_dir, "manifest.jsonl"))
    servers = [Server(url, headers, per_server) for url, headers in server_specs]
    if dry_run:
        if servers:
            check_servers(jobs, workflows, servers, say)
        for job in jobs:
            say(f"line {job.line}: {os.path.basename(job.image)} + {', '.join(map(os.path.basename, job.videos))} "
                f"-> {os.path.join(out_dir, job.output)} ({os.path.basename(job.workflow)}, seed {job.seed})")
        say(f"{len(jobs)} job(s) valid" + ("" if servers else " (no server given: files and values checked, "
                                              "not the servers' nodes and model files)") + "; nothing was queued")
        return 0
    check_servers(jobs, workflows, servers, say)
    os.makedirs(out_dir, exist_ok=True)
    skipped = resume(jobs, read_manifest(manifest), out_dir)
    if skipped:
        say(f"{skipped} of {len(jobs)} job(s) already done (outputs present and unchanged): skipped")
    batch = Batch(jobs, workflows, servers, out_dir, manifest, retries, timeout, say, status_line, cancel_running)
    ok = batch.run()
    say(summary(jobs))
    done = sum(j.status == "done" for j in jobs)
    say(f"{done}/{len(jobs)} done; manifest: {manifest}")
    return 0 if ok else (130 if batch.stopping.is_set() else 1)
